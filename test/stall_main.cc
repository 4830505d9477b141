// Entry point of the real-stall suites. doctest's own signal handlers are
// off: these tests send real signals to real threads. The suites stall far
// more often than the default rate limit (60 a minute) allows, and test
// everything but the limit itself (tested in a process of its own), so the
// limit is lifted here.
#define DOCTEST_CONFIG_NO_POSIX_SIGNALS
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <uvstall/uvstall.h>

#include <cstdio>

int main(int argc, char **argv) {
  uvstall_process_options_t p;
  uvstall_process_options_init(&p);
  p.max_stalls_per_minute = 0;
  if (uvstall_configure(&p) != 0) {
    std::fprintf(stderr, "uvstall_configure failed\n");
    return 2;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
