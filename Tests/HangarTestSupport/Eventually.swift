/// Polls `condition` until it holds, or fails the test after `timeout`.
public func eventually(
    _ what: @autoclosure () -> String, timeout: Duration = .seconds(10), _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestFailure("not within \(timeout): \(what())")
}
