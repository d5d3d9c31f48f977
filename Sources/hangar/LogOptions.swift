import ArgumentParser
import Glibc
import HangarCore
import Logging

/// How a long-running role (controller, drone, proxy, dev) logs: one line per record on
/// standard error, as text (key=value metadata) or as JSON objects (`LineLogHandler`). The
/// defaults come from HANGAR_LOG_FORMAT and HANGAR_LOG_LEVEL.
struct LogOptions: ParsableArguments {
    typealias Format = LineLogHandler.Format

    @Option(name: .customLong("log-format"), help: ArgumentHelp("text or json (default: $HANGAR_LOG_FORMAT, else text).", valueName: "format"))
    var format: String?

    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, notice, warning, error or critical (default: $HANGAR_LOG_LEVEL, else info).", valueName: "level"))
    var level: String?

    func validate() throws {
        _ = try settings()
    }

    /// The format and level: the flags', else the environment's, else text and info.
    func settings() throws -> (Format, Logger.Level) {
        let format = try choice(format, variable: "HANGAR_LOG_FORMAT", flag: "--log-format", default: Format.text)
        let level = try choice(level, variable: "HANGAR_LOG_LEVEL", flag: "--log-level", default: Logger.Level.info)
        return (format, level)
    }

    private func choice<Value: RawRepresentable & CaseIterable>(
        _ flag: String?, variable: String, flag name: String, default fallback: Value
    ) throws -> Value where Value.RawValue == String {
        let text = flag ?? getenv(variable).map { String(cString: $0) }
        guard let text, !text.isEmpty else { return fallback }
        guard let value = Value(rawValue: text) else {
            let source = flag == nil ? "\(variable) (from the environment)" : name
            let names = Value.allCases.map(\.rawValue).joined(separator: ", ")
            throw ValidationError("\(source): \"\(text.prefix(32))\" is not one of \(names)")
        }
        return value
    }

    /// Installs the handler for the whole process; call once, first thing in run().
    func bootstrap() {
        guard let (format, level) = try? settings() else { return }  // validate() has refused it
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, format: format, level: level) }
    }
}
