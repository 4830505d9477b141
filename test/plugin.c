/* A library the unit tests load after the module table was built. */
__attribute__((visibility("default"), noinline)) int uvstall_test_plugin_fn(int x) {
  return x * 7 + 3;
}
