// uvstall.hpp — a header-only RAII wrapper over the C API (uvstall.h).
//
//     uvstall::Options opts;                 // uvstall_options_t with defaults
//     opts.threshold_ms = 100;
//     uvstall::Watchdog dog(loop, opts);     // throws uvstall::Error on failure
//     uv_run(loop, UV_RUN_DEFAULT);
//     dog.stop();                            // or let the destructor do it
//
// Construction throws uvstall::Error (a std::runtime_error carrying the
// code) when uvstall_start fails; stop() and the destructor never throw.
// Like uvstall_stop, the destructor must run on the loop's thread, and the
// loop must run once more afterwards for libuv to finish closing handles.
#ifndef UVSTALL_UVSTALL_HPP
#define UVSTALL_UVSTALL_HPP

#include <uvstall/uvstall.h>

#include <stdexcept>
#include <string>

namespace uvstall {

struct Options : uvstall_options_t {
  Options() : uvstall_options_t() { uvstall_options_init(this); }
};

class Error : public std::runtime_error {
 public:
  explicit Error(int code)
      : std::runtime_error(std::string("uvstall: ") + uvstall_strerror(code)), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

class Watchdog {
 public:
  explicit Watchdog(uv_loop_t *loop, const Options &opts = Options()) {
    int rc = uvstall_start(loop, &opts, &h_);
    if (rc != 0) throw Error(rc);
  }
  ~Watchdog() { stop(); }
  Watchdog(const Watchdog &) = delete;
  Watchdog &operator=(const Watchdog &) = delete;
  Watchdog(Watchdog &&other) noexcept : h_(other.h_) { other.h_ = nullptr; }
  Watchdog &operator=(Watchdog &&other) noexcept {
    if (this != &other) {
      stop();
      h_ = other.h_;
      other.h_ = nullptr;
    }
    return *this;
  }

  // Stops watching; returns 0 or a negative uvstall code. Idempotent.
  int stop() noexcept {
    if (h_ == nullptr) return 0;
    int rc = uvstall_stop(h_);
    if (rc == 0) h_ = nullptr;
    return rc;
  }

  uvstall_stats_t stats() const {
    uvstall_stats_t s{};
    s.struct_size = sizeof s;
    if (h_ != nullptr) uvstall_get_stats(h_, &s);
    return s;
  }

  // Starts a new stats window (uvstall_stats_reset); 0 or a negative code.
  int reset_stats() noexcept { return h_ != nullptr ? uvstall_stats_reset(h_) : UVSTALL_EINVAL; }

  uvstall_t *handle() const noexcept { return h_; }

 private:
  uvstall_t *h_ = nullptr;
};

}  // namespace uvstall

#endif  // UVSTALL_UVSTALL_HPP
