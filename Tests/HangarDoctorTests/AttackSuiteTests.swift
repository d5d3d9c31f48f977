import Glibc
import HangarCore
import HangarDoctor
import HangarPolicy
import HangarSandbox
import HangarTestSupport
import Testing

/// The isolation attack suite (Attacks/hangar-attack.c, HangarDoctor.Attack.all): each
/// attack as hostile code in a sandbox made from the default policy, with a sibling
/// sandbox running; each must be contained, with the sibling, the host and a host canary
/// unharmed, and the image unchanged at the end.
@Suite("Isolation attacks", .serialized, .timeLimit(.minutes(10)))
struct AttackSuiteTests {
    static let policy: Policy = {
        do {
            return try PolicyLoader(directory: TestSandbox.repositoryRoot + "/policies")
                .policy(forImage: try ImageName("default"))
        } catch {
            fatalError("the default policy: \(error)")
        }
    }()

    @Test("every attack is contained", arguments: Attack.all.map(\.name))
    func attack(_ name: String) async throws {
        let before = HostState.capture()
        let suite = AttackSuite(runtime: TestSandbox.runtime, policy: Self.policy)
        let results = try await suite.run(Attack.all.filter { $0.name == name })
        let result = try #require(results.first)
        #expect(result.contained, "\(name): \(result.observed)")
        await expectHostRestored(before, "the attack left something on the host")
    }

    @Test("without the argument guard, the suite names the attacks that get through")
    func weakened() async throws {
        let suite = AttackSuite(runtime: TestSandbox.runtime, policy: Self.policy, weakening: .argumentGuard)
        let guarded = ["userns-clone", "terminal-injection", "raw-socket", "packet-socket", "vsock-socket", "alg-socket"]
        let results = try await suite.run(Attack.all.filter { guarded.contains($0.name) || $0.name == "mount" })
        let escaped = Set(results.filter { !$0.contained }.map(\.attack.name))
        #expect(escaped.contains("userns-clone"), "clone(CLONE_NEWUSER) gets through")
        #expect(escaped.contains("terminal-injection"), "TIOCSTI reaches the tty layer")
        #expect(escaped.isSubset(of: guarded), "only what the guard stops: \(escaped)")
        #expect(!escaped.contains("mount"), "the must-block set holds without the guard")
    }
}
