// Interpreter frames for CPython hosts ("lang_frames"). Not implemented yet:
// no thread has a reader, so records carry native frames only.
#include "watch.h"

namespace uvstall::internal {

std::shared_ptr<LangFrames> lang_frames_for_current_thread() { return nullptr; }

}  // namespace uvstall::internal
