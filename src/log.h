// The library's one logging hook. Progress and notes go through rsam::log, so
// a program embedding rsam (the server, the Python bindings) can send them
// elsewhere; by default they go to stderr, a line each.
#pragma once

#include <functional>
#include <string>

namespace rsam {

// Progress: a meter the default sink rewrites in place ("\r", no newline) until
// the next line or log_progress_end(); other sinks get each update as a line.
enum class LogLevel { Info, Warning, Progress };

// The sink receives one line without its newline. An empty function restores
// the default (stderr). Not for errors: those are thrown as rsam::Error.
void set_log_sink(std::function<void(LogLevel, const std::string&)> sink);
void log(LogLevel level, const std::string& line);
inline void log_info(const std::string& line) { log(LogLevel::Info, line); }
inline void log_warning(const std::string& line) { log(LogLevel::Warning, line); }
inline void log_progress(const std::string& line) { log(LogLevel::Progress, line); }
// Ends an open progress meter with its newline (nothing if none is open).
void log_progress_end();

}  // namespace rsam
