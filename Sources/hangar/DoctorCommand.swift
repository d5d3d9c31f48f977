import ArgumentParser
import Glibc
import HangarCore
import HangarDoctor
import HangarPolicy
import HangarSandbox
import Logging

/// `hangar doctor`: what this host offers Hangar, and (with --attack) the isolation suite.
struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check this host for what sandboxes need; with --attack, attack a policy's sandboxes.",
        discussion: """
            Exits non-zero when Hangar cannot run safely here (a check is MISSING), or when --attack \\
            finds an attack NOT CONTAINED. The attacks are docs/SECURITY.md's table: hostile code \\
            (hangar-attack, next to hangar) run in sandboxes made from the policy.
            """)

    @Flag(help: "Run the isolation attack suite against the policy's sandboxes.")
    var attack = false

    @Option(help: ArgumentHelp("The policy to attack (default: policies/default.toml).", valueName: "file"))
    var policy: String?

    @Option(help: ArgumentHelp("Only these attacks, comma-separated (see the table).", valueName: "list"))
    var only: String?

    @Option(help: ArgumentHelp(
        "Leave one layer out of the attack sandboxes, to see what it stops: argument-guard or landlock.",
        valueName: "layer"))
    var weaken: AttackSuite.Weakening?

    func validate() throws {
        if let only {
            let unknown = Set(only.split(separator: ",").map(String.init)).subtracting(Attack.all.map(\.name))
            if !unknown.isEmpty { throw ValidationError("--only: unknown attack \(unknown.sorted().joined(separator: ", "))") }
        }
    }

    func run() async throws {
        var checks = HostCheck.all()
        var runtime: SandboxRuntime?
        if !checks.contains(where: \.blocks) {
            // Everything a sandbox needs is there: start one.
            do {
                let started = try SandboxRuntime(configuration: .fromEnvironment(), logger: Logger(label: "hangar.doctor"))
                runtime = started
                checks.append(await HostCheck.sandbox(runtime: started))
            } catch {
                checks.append(HostCheck(name: "sandbox", status: .missing, found: "no runtime: \(error)", fix: nil))
            }
        }
        defer { runtime?.finish() }
        print(table(["check", "status", "found", "fix"], checks.map { [$0.name, $0.status.rawValue, $0.found, $0.fix ?? ""] }))
        var failed = checks.contains(where: \.blocks)
        if attack && !failed, let runtime {
            let loader = PolicyLoader.fromEnvironment()
            let policy = try await commandLineErrors {
                try self.policy.map { try loader.load(path: $0) } ?? loader.policy(forImage: try ImageName("default"))
            }
            let selected = only.map { names in Attack.all.filter { names.split(separator: ",").contains(Substring($0.name)) } }
            print("\nattacking sandboxes of policy \"\(policy.name)\"" + (policy.files.isEmpty ? "" : " (\(policy.files.joined(separator: ", ")))"))
            if let weaken {
                print("WARNING: the attack sandboxes run without the \(weaken.rawValue) layer (--weaken)")
            }
            let results = try await AttackSuite(runtime: runtime, policy: policy, weakening: weaken).run(
                selected ?? Attack.all)
            print(table(
                ["attack", "group", "expected", "observed", "result"],
                results.map { [$0.attack.name, $0.attack.group.rawValue, $0.attack.expectation.description, $0.observed, $0.contained ? "contained" : "NOT CONTAINED"] }))
            let escaped = results.filter { !$0.contained }
            print("\n\(results.count - escaped.count) of \(results.count) attacks contained" + (escaped.isEmpty ? "" : "; NOT CONTAINED: \(escaped.map(\.attack.name).joined(separator: ", "))"))
            failed = failed || !escaped.isEmpty
        }
        if failed { throw ExitCode(1) }
    }

    /// Columns padded to their widest cell; the last column is not padded.
    private func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

extension AttackSuite.Weakening: ExpressibleByArgument {}
