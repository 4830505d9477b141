// UVSTALL_* environment variables: one table of names, ranges and defaults,
// parsed into the C API's option structs. Pure (the lookup is injected), so
// tests drive it without touching the process environment. Used by preload
// mode (src/preload.cc); any other front end that reads the environment
// should use it too, so every front end accepts and rejects the same values.
//
// A bad value never fails: it gives one warning line naming the variable and
// the accepted range, and the default is used.
#pragma once

#include <sys/types.h>
#include <uvstall/uvstall.h>

#include <functional>
#include <string>
#include <vector>

namespace uvstall::internal {

// What the environment asks for, validated.
struct EnvSettings {
  uvstall_options_t opts;             // uvstall_options_init, then the variables
  uvstall_process_options_t popts;    // uvstall_process_options_init, then the variables
  bool process_set = false;           // a process-wide variable was given (valid)
  std::string output_path;            // UVSTALL_OUTPUT_PATH, %p not expanded; empty: stderr
  bool no_children = false;           // UVSTALL_NO_CHILDREN=1: children do not inherit preload mode
  std::string metrics_addr;           // UVSTALL_METRICS_ADDR (valid); empty: off
  std::string metrics_file;           // UVSTALL_METRICS_FILE (valid, %p not expanded); empty: off
  std::vector<std::string> warnings;  // one line each, without the newline
};

// Returns the value of a variable, or null when it is not set.
using EnvLookup = std::function<const char *(const char *name)>;

// Reads every UVSTALL_* variable uvstall knows. opts.output_path is left
// null: expand output_path with expand_output_path and point it there.
// Likewise popts.metrics_addr and popts.metrics_file: point them at
// metrics_addr and (expanded) metrics_file when those are not empty.
EnvSettings read_env(const EnvLookup &get);

// "%p" becomes the pid and "%%" a single "%"; anything else is kept.
std::string expand_output_path(const std::string &path, pid_t pid);

// A variable's value as a warning quotes it: printable ASCII as is, `"` and
// `\` escaped, other bytes (newlines, non-ASCII) as \xNN, cut once the
// quoted text reaches kMaxQuotedValueBytes, with "... (N bytes)": a warning
// stays one short line whatever the environment holds.
constexpr size_t kMaxQuotedValueBytes = 80;
std::string quote_env_value(const char *value);

// A capture signal by number ("40") or name ("SIGUSR1", "USR2", "SIGRTMIN+2",
// "RTMAX-3"). Returns false when the text names no signal uvstall can use.
bool parse_signal(const char *text, int *out);

}  // namespace uvstall::internal
