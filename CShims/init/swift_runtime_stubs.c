// SwiftPM links every executable through the Swift driver, which adds swiftrt.o and
// the Swift runtime even to a C program. swiftrt.o only needs these two symbols;
// defining them here keeps the runtime (several MiB, and its start-up work) out of
// hangar-init, which must stay a small static C program.
void swift_addNewDSOImage(const void *image);
void swift_addNewDSOImage(const void *image) { (void)image; }
int _swift_backtrace_isThunkFunction(const char *name);
int _swift_backtrace_isThunkFunction(const char *name) {
    (void)name;
    return 0;
}
