/* A small C program linked against Debian's libuv (dynamically), the second
 * libuv program the preload tests run. Knows nothing of uvstall.
 *
 * usage: uvstall-test-c-host stall|norun|kill
 *   stall  runs the default loop; a timer callback blocks 300 ms in
 *          c_host_blocking_sleep; then prints what uv_walk and
 *          uv_loop_alive show, closes its timer and the loop, prints
 *          uv_loop_close's result, exits 7.
 *   norun  never runs a loop (prints one line, exits 0).
 *   kill   like stall, then kills itself with SIGTERM.
 *
 * Built a second time with UVSTALL_FAKE_PYTHON: it then exports
 * Py_GetVersion() = "3.12.1 ..." and no other CPython symbol, so uvstall
 * refuses its frames reader (lang_frames absent, lang_reason says why, said
 * once on stderr).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uv.h>

/* Blocks for ms milliseconds, resuming after signals (the capture signal
 * interrupts nanosleep). */
__attribute__((noinline, visibility("default"))) void c_host_blocking_sleep(int ms) {
  struct timespec left = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&left, &left) != 0 && errno == EINTR) {
  }
}

#ifdef UVSTALL_FAKE_PYTHON
__attribute__((visibility("default"))) const char *Py_GetVersion(void) {
  return "3.12.1 (main, fake) [GCC 12.2.0]";
}
#endif

static void on_timer(uv_timer_t *t) {
  (void)t;
  c_host_blocking_sleep(300);
}

static void count_handle(uv_handle_t *h, void *arg) {
  int *n = arg;
  ++*n;
  printf("  handle: %s\n", uv_handle_type_name(uv_handle_get_type(h)));
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "stall";
  if (strcmp(mode, "norun") == 0) {
    printf("never ran a loop\n");
    return 0;
  }
  uv_loop_t *loop = uv_default_loop();
  uv_timer_t timer;
  uv_timer_init(loop, &timer);
  uv_timer_start(&timer, on_timer, 50, 0);
  int r = uv_run(loop, UV_RUN_DEFAULT);
  printf("uv_run returned %d, uv_loop_alive %d\n", r, uv_loop_alive(loop));
  int n = 0;
  uv_walk(loop, count_handle, &n);
  printf("uv_walk saw %d handle(s)\n", n);
  uv_close((uv_handle_t *)&timer, NULL);
  r = uv_run(loop, UV_RUN_DEFAULT);
  printf("uv_run returned %d, uv_loop_alive %d\n", r, uv_loop_alive(loop));
  printf("uv_loop_close returned %d\n", uv_loop_close(loop));
  fflush(stdout);
  if (strcmp(mode, "kill") == 0) raise(SIGTERM);
  return 7;
}
