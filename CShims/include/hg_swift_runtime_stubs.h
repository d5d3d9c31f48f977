// SwiftPM links every executable through the Swift driver, which adds swiftrt.o and
// the Swift runtime even to a C program. swiftrt.o only needs these two symbols;
// defining them keeps the runtime (several MiB, and its start-up work) out of Hangar's
// static C programs (hangar-init, hangar-attack). Included by exactly one file of each.
#ifndef HG_SWIFT_RUNTIME_STUBS_H
#define HG_SWIFT_RUNTIME_STUBS_H
void swift_addNewDSOImage(const void *image);
void swift_addNewDSOImage(const void *image) { (void)image; }
int _swift_backtrace_isThunkFunction(const char *name);
int _swift_backtrace_isThunkFunction(const char *name) {
    (void)name;
    return 0;
}
#endif
