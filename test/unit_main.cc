// Entry point of the unit suites (pure functions and single-threaded parts).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
