// The suite's main(). Catch2 v2 compiles its implementation into the one file
// that defines CATCH_CONFIG_RUNNER; v3 keeps it in libCatch2, which engine.mk
// links. The same main() serves both.
#define CATCH_CONFIG_RUNNER
#include "catch2_compat.h"

int main(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }
