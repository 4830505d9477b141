// A stall's fingerprint: a hash of the functions on its stack (function
// start addresses, module-relative, plus interpreter function names) —
// not of raw return addresses, which differ from sample to sample inside
// one busy loop. Frames of skipped modules (tools/skip-modules.txt) are
// left out, so the same culprit gives the same fingerprint whatever libc or
// libuv did around it. Pure functions.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "modules.h"

namespace uvstall::internal {

// True if `name` (a module's basename) matches the skip-list glob `pattern`
// (`*` any run, `?` one character, everything else itself).
bool skip_glob_match(const char *pattern, const char *name);
// True if frames of this module path are never the culprit.
bool module_is_skipped(const std::string &path);

// 16 hex digits; empty when there is nothing to hash.
std::string stall_fingerprint(const std::vector<ResolvedFrame> &frames,
                              const nlohmann::ordered_json &lang_frames);

}  // namespace uvstall::internal
