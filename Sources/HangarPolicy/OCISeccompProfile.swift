import FoundationEssentials
import Glibc
import HangarSandbox

/// An OCI (Docker, runc, Podman) seccomp profile, read into Hangar's model so that users
/// can bring theirs. Hangar's rules still hold on top of it: the must-block set is refused
/// whatever the profile says, the argument guard (namespace flags to clone, raw and
/// packet sockets, TIOCSTI) applies, unknown system call numbers get ENOSYS, and other
/// architectures are killed.
///
/// Accepted: `defaultAction` SCMP_ACT_ERRNO (an allow-list; any other default action is
/// refused), entries with SCMP_ACT_ALLOW, SCMP_ACT_LOG (allowed) or
/// SCMP_ACT_ERRNO, argument conditions with SCMP_CMP_EQ and SCMP_CMP_MASKED_EQ (at most
/// two per entry). Entries conditioned on capabilities (`includes.caps`) are skipped,
/// since a sandbox keeps none of the capabilities they name; entries for other
/// architectures are skipped, as are names this architecture does not have.
enum OCISeccompProfile {
    struct File: Decodable {
        var defaultAction: String
        var defaultErrnoRet: UInt32?
        var syscalls: [Entry]?
    }

    struct Entry: Decodable {
        var names: [String]?
        var name: String?
        var action: String
        var errnoRet: UInt32?
        var args: [Argument]?
        var includes: Filter?
        var excludes: Filter?
    }

    struct Argument: Decodable {
        var index: UInt32
        var value: UInt64
        var valueTwo: UInt64?
        var op: String
    }

    struct Filter: Decodable {
        var caps: [String]?
        var arches: [String]?
    }

    /// Errors name the entry ("syscalls[3]") and why.
    struct Invalid: Error, CustomStringConvertible {
        var description: String
    }

    static let nativeArches: Set<String> = {
        #if arch(x86_64)
            ["amd64", "x86_64", "SCMP_ARCH_X86_64"]
        #elseif arch(arm64)
            ["arm64", "aarch64", "SCMP_ARCH_AARCH64"]
        #else
            []
        #endif
    }()

    static let cache = FileCache<SeccompProfile>()

    /// The profile in the file at `path`, parsed again only when the file changed.
    static func load(path: String) throws(Invalid) -> SeccompProfile {
        try cache.value(for: path) { () throws(Invalid) -> (SeccompProfile, [String]) in
            (try read(path: path), [path])
        }
    }

    private static func read(path: String) throws(Invalid) -> SeccompProfile {
        let bytes: [UInt8]
        do {
            bytes = try readWholeFile(path, limit: 4 << 20)
        } catch {
            throw Invalid(description: "seccomp profile \(path): \(error)")
        }
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: Data(bytes))
        } catch {
            throw Invalid(description: "\(path) is not an OCI seccomp profile: \(describe(error))")
        }
        return try profile(file, name: "oci:\(path)", path: path)
    }

    static func profile(_ file: File, name: String, path: String) throws(Invalid) -> SeccompProfile {
        guard file.defaultAction == "SCMP_ACT_ERRNO" else {
            throw Invalid(
                description:
                    "\(path): defaultAction \(file.defaultAction) is not accepted; Hangar profiles are allow-lists (SCMP_ACT_ERRNO)"
            )
        }
        var profile = SeccompProfile(name: name, allowed: [])
        profile.defaultErrno = Int32(file.defaultErrnoRet ?? UInt32(EPERM))
        profile.argumentDenials = SeccompProfile.default.argumentDenials
        for (index, entry) in (file.syscalls ?? []).enumerated() {
            let place = "\(path): syscalls[\(index)]"
            if let caps = entry.includes?.caps, !caps.isEmpty { continue }
            if let arches = entry.includes?.arches, !arches.isEmpty, nativeArches.isDisjoint(with: arches) { continue }
            if let arches = entry.excludes?.arches, !nativeArches.isDisjoint(with: arches) { continue }
            let names = (entry.names ?? []) + (entry.name.map { [$0] } ?? [])
            guard !names.isEmpty else { throw Invalid(description: "\(place): no names") }
            let conditions = try (entry.args ?? []).map { argument throws(Invalid) in
                try condition(argument, place: place)
            }
            guard conditions.count <= 2 else {
                throw Invalid(description: "\(place): at most two argument conditions per entry")
            }
            for name in names where SeccompProfile.knows(name) {
                switch entry.action {
                case "SCMP_ACT_ALLOW", "SCMP_ACT_LOG":
                    if conditions.isEmpty {
                        profile.allowed.insert(name)
                    } else {
                        profile.conditionalAllows.append(.init(name, conditions))
                    }
                case "SCMP_ACT_ERRNO":
                    let err = Int32(entry.errnoRet ?? UInt32(profile.defaultErrno))
                    if conditions.isEmpty {
                        profile.errnos[name] = err
                    } else {
                        var denial = SeccompProfile.ArgumentMatch(name, conditions)
                        denial.errno = err
                        profile.argumentDenials.append(denial)
                    }
                case "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP":
                    // Refused like every call not allowed.
                    profile.allowed.remove(name)
                    profile.conditionalAllows.removeAll { $0.syscall == name }
                default:
                    throw Invalid(description: "\(place): action \(entry.action) is not supported")
                }
            }
        }
        return profile
    }

    private static func condition(_ argument: Argument, place: String) throws(Invalid)
        -> SeccompProfile.ArgumentMatch.Condition
    {
        guard argument.index <= 5 else { throw Invalid(description: "\(place): argument index \(argument.index) > 5") }
        switch argument.op {
        case "SCMP_CMP_EQ":
            return .init(argument: argument.index, mask: ~0, value: argument.value)
        case "SCMP_CMP_MASKED_EQ":
            // OCI puts the mask in value and the datum in valueTwo.
            return .init(argument: argument.index, mask: argument.value, value: argument.valueTwo ?? 0)
        default:
            throw Invalid(description: "\(place): comparison \(argument.op) is not supported (SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ)")
        }
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            "missing \(path(context.codingPath + [key]))"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            "\(path(context.codingPath)): \(context.debugDescription)"
        case DecodingError.dataCorrupted(let context):
            context.codingPath.isEmpty ? "not valid JSON" : "\(path(context.codingPath)): \(context.debugDescription)"
        default:
            "\(error)"
        }
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingPrefix(".").description
    }
}
