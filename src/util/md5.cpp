#include "util/md5.h"

#include "util/error.h"

#include <openssl/evp.h>

namespace engine {

Md5Digest md5(const void *data, std::size_t len)
{
    Md5Digest digest;
    unsigned int size = 0;
    if (EVP_Digest(data, len, digest.data(), &size, EVP_md5(), nullptr) != 1 ||
        size != digest.size())
        throw Error("MD5 computation failed (OpenSSL EVP)");
    return digest;
}

} // namespace engine
