// Parsing of CPython's traceback dumper output (src/lang_python.cc), exposed
// for the unit tests.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace uvstall::internal {

// `  File "F", line N in NAME` lines into lang_frames, innermost first.
nlohmann::ordered_json parse_python_traceback(const std::string &text);
// Undoes the dumper's \xNN, \uNNNN, \UNNNNNNNN escapes (to UTF-8).
std::string python_unescape(const std::string &s);

}  // namespace uvstall::internal
