/* One link of the snapshot tests' call chain built with frame pointers and
 * no optimization (-O0 -fno-omit-frame-pointer, see test/meson.build): its
 * unwind rule needs rbp, which /proc does not give, so the snapshot
 * unwinder must recover rbp from the stack copy (checked, and the frames
 * past it marked) or stop at it, never give a wrong caller. */
long uvstall_snap_inner(long (*fn)(void *), void *arg);

long uvstall_snapfp_middle(long (*fn)(void *), void *arg) {
  long r = uvstall_snap_inner(fn, arg);
  return r;
}
