// Both public headers compile as C++17 and the wrapper links.
#include <uvstall/uvstall.h>
#include <uvstall/uvstall.hpp>

int main() {
  uvstall::Options o;
  uvstall::Error e(UVSTALL_EINTERVAL);
  return o.struct_size == sizeof(uvstall_options_t) && e.code() == UVSTALL_EINTERVAL ? 0 : 1;
}
