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

/* The same link with alloca: sp moves in the body, so the slot its
 * prologue implies is wrong at the call (it lands in the zeroed buffer)
 * and rbp must come from the proven scan instead. */
long uvstall_snapfp_alloca_middle(long (*fn)(void *), void *arg) {
  volatile char *buf = __builtin_alloca(256);
  for (int i = 0; i < 256; ++i) buf[i] = 0;
  long r = uvstall_snap_inner(fn, arg);
  buf[0] = (char)r;
  return r;
}
