import HangarCore
import Testing

@Suite("Backend state machine")
struct BackendStateTests {
    static let events: [BackendEvent] =
        [.load, .spawn, .spawned, .ready, .graceExpired, .ended(exitCode: 0, reason: nil), .ended(exitCode: nil, reason: .oom)]
        + TerminationReason.allCases.map { .terminate($0) }

    /// Every state reachable from `scheduled`.
    static func reachable() -> [BackendState] {
        var seen: [BackendState] = [BackendState()]
        var queue = seen
        while let state = queue.popLast() {
            for event in events {
                guard let next = try? state.applying(event), !seen.contains(next) else { continue }
                seen.append(next)
                queue.append(next)
            }
        }
        return seen
    }

    @Test("the happy path goes through every status in order")
    func happyPath() throws {
        var state = BackendState()
        var statuses = [state.status]
        for event: BackendEvent in [.load, .spawn, .spawned, .ready, .terminate(.idle), .graceExpired, .ended(exitCode: nil, reason: nil)] {
            state = try state.applying(event)
            statuses.append(state.status)
        }
        #expect(statuses == BackendStatus.allCases.sorted())
        #expect(state.reason == .idle, "the terminate's reason stays")
    }

    @Test("no event moves any reachable state backwards")
    func forwardOnly() {
        let states = Self.reachable()
        #expect(states.count > 20)
        for state in states {
            for event in Self.events {
                if let next = try? state.applying(event) {
                    #expect(next.status >= state.status, "\(state) + \(event) -> \(next)")
                }
            }
        }
    }

    @Test("a terminate is honoured in every status before it runs, and at once before the spawn")
    func terminateEverywhere() throws {
        let loading = try BackendState().applying(.load)
        let early = try loading.applying(.terminate(.external))
        #expect(early.status == .terminated && early.reason == .external)
        let starting = try loading.applying(.spawn)
        let stopping = try starting.applying(.terminate(.external))
        #expect(stopping.status == .terminating, "the spawn in flight is stopped when it returns")
        // The spawn returning late changes nothing.
        #expect(try stopping.applying(.spawned) == stopping)
        #expect(try stopping.applying(.terminate(.idle)).reason == .external, "the first reason stays")
    }

    @Test("an end says why: exited with its code, oom over a running termination, startup-timeout kept")
    func reasons() throws {
        let ready = try BackendState().applying(.load).applying(.spawn).applying(.spawned).applying(.ready)
        let exited = try ready.applying(.ended(exitCode: 3, reason: nil))
        #expect(exited.reason == .exited && exited.exitCode == 3)
        let oom = try ready.applying(.terminate(.idle)).applying(.ended(exitCode: nil, reason: .oom))
        #expect(oom.reason == .oom)
        let waiting = try BackendState().applying(.load).applying(.spawn).applying(.spawned)
        let timedOut = try waiting.applying(.terminate(.startupTimeout)).applying(.graceExpired)
            .applying(.ended(exitCode: nil, reason: nil))
        #expect(timedOut.status == .terminated && timedOut.reason == .startupTimeout)
    }

    @Test("events that make no sense are refused, naming the state")
    func illegal() {
        let error = #expect(throws: BackendState.IllegalTransition.self) { try BackendState().applying(.ready) }
        #expect(error?.description == "backend event ready is not possible while scheduled")
        #expect(throws: BackendState.IllegalTransition.self) { try BackendState().applying(.graceExpired) }
        #expect(throws: BackendState.IllegalTransition.self) { try BackendState().applying(.load).applying(.load) }
    }
}
