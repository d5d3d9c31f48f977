import ArgumentParser
import HangarCore
import HangarPolicy

/// `hangar policy …`: validate and show policies.
struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "Validate and show sandbox policies (docs/POLICY.md).",
        subcommands: [Check.self, Show.self])

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a policy file and print the effective policy (what extends and defaults make of it).")

        @Argument(help: ArgumentHelp("The policy file.", valueName: "file"))
        var file: String

        func run() async throws {
            let policy = try await commandLineErrors { try PolicyLoader.fromEnvironment().load(path: file) }
            print(policy.toml, terminator: "")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the effective policy an image runs with (policies/IMAGE.toml, else default.toml).")

        @Argument(help: ArgumentHelp("The image's name.", valueName: "image"))
        var image: String

        func run() async throws {
            let policy = try await commandLineErrors {
                try PolicyLoader.fromEnvironment().policy(forImage: try ImageName(image))
            }
            print(policy.toml, terminator: "")
        }
    }
}
