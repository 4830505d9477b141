// Entry point of the real-stall suites. doctest's own signal handlers are
// off: these tests send real signals to real threads.
#define DOCTEST_CONFIG_NO_POSIX_SIGNALS
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
