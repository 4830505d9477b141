// Functions exported by libuvstall.so for uvstall's own preload shim
// (src/preload.cc) and language packages: not part of the public contract,
// versioned in their own node (UVSTALL_PRIVATE) of src/libuvstall.map so they
// may change with the library. Call them on the watch's thread.
#pragma once

#include <uvstall/uvstall.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the loop's thread as away from its loop (paused != 0: time outside
 * the loop is not a stall; a stall in progress ends now) or back in it. */
UVSTALL_EXTERN void uvstall__set_paused(uvstall_t *h, int paused);

/* The most handles a watch owns: uvstall__handles' out has this many. */
#define UVSTALL__MAX_HANDLES 4

/* The libuv handles a watch owns (its timer, async, prepare and check), so
 * a shim can keep them out of the host's uv_walk. Returns how many were
 * stored in out (0 for an external watch). */
UVSTALL_EXTERN int uvstall__handles(const uvstall_t *h, uv_handle_t *out[UVSTALL__MAX_HANDLES]);

/* Benchmark of the frames provider (bench/python_frames.py): reads the
 * calling thread's interpreter frames 1 + `iterations` times with one new
 * provider, the way the sentinel reads a stalled thread's; stores the time
 * of the first read (nothing cached), the mean of the others, and the
 * frames of the last. 0, or -1 when the thread has no readable frames. */
UVSTALL_EXTERN int uvstall__lang_frames_bench(int iterations, double *first_ns, double *ns_per_read,
                                              int *frames);

#ifdef __cplusplus
}
#endif
