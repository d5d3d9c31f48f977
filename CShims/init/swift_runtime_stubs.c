// The definitions swiftrt.o needs, so that no Swift runtime is linked (see the header).
#include "../include/hg_swift_runtime_stubs.h"
