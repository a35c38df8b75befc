// Thin glue between Perl and the C++ engine: convert arguments, make one call,
// convert the result. C++ exceptions become Perl dies with the same text.
#include "backup/render.h"

#include <exception>
#include <string>

#define PERL_NO_GET_CONTEXT
#include "EXTERN.h"
#include "perl.h"
#include "XSUB.h"

// Runs one engine call. croak() longjmps, which must not cross a C++ frame
// that still owns objects: the message is copied out, every C++ local is gone
// by the time we croak, and the error text reaches Perl unchanged.
template <class Body> static SV *engine_call(pTHX_ Body &&body)
{
    SV *error = nullptr;
    SV *result = nullptr;
    try {
	result = body();
    } catch (const std::exception &e) {
	error = newSVpv(e.what(), 0);
    }
    if (error)
	croak_sv(sv_2mortal(error));
    return result;
}

static SV *new_string_sv(pTHX_ const std::string &text)
{
    return newSVpvn(text.data(), text.size());
}

// An undef or zero precision asks for the default; a hash carries it as
// { precision => n } (PVE::Format accepts both forms).
static int precision_arg(pTHX_ SV *arg)
{
    if (SvROK(arg) && SvTYPE(SvRV(arg)) == SVt_PVHV) {
	SV **value = hv_fetchs((HV *)SvRV(arg), "precision", 0);
	arg = value ? *value : &PL_sv_undef;
    }
    if (!SvOK(arg))
	return 0;
    IV precision = SvIV(arg);
    if (precision < 0 || precision > 1000)
	croak("render_bytes: precision %" IVdf " out of range\n", precision);
    return static_cast<int>(precision);
}

MODULE = PVE::VZDump::QemuServer::Engine	PACKAGE = PVE::VZDump::QemuServer::Engine

PROTOTYPES: DISABLE

SV *
version()
    CODE:
	RETVAL = newSVpvs(ENGINE_VERSION);
    OUTPUT:
	RETVAL

SV *
render_bytes(value, precision = &PL_sv_undef)
	NV value
	SV *precision
    CODE:
	int digits = precision_arg(aTHX_ precision);
	RETVAL = engine_call(aTHX_ [&] { return new_string_sv(aTHX_ engine::render_bytes(value, digits)); });
    OUTPUT:
	RETVAL

SV *
render_duration(seconds = &PL_sv_undef, auto_limit = false)
	SV *seconds
	bool auto_limit
    CODE:
	NV value = SvOK(seconds) ? SvNV(seconds) : 0;
	RETVAL = engine_call(aTHX_ [&] { return new_string_sv(aTHX_ engine::render_duration(value, auto_limit)); });
    OUTPUT:
	RETVAL
