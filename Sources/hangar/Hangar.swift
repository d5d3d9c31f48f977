import ArgumentParser

@main
struct Hangar: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hangar",
        abstract: "Run one isolated, stateful process per key.",
        subcommands: [Run.self, PolicyCommand.self, DoctorCommand.self, DroneCommand.self, Bench.self]
    )
}
