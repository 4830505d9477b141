/* The public header compiles as C11 and links. */
#include <uvstall/uvstall.h>

int main(void) {
  uvstall_options_t o;
  uvstall_options_init(&o);
  return o.struct_size == sizeof o && uvstall_strerror(UVSTALL_EINVAL)[0] != '\0' ? 0 : 1;
}
