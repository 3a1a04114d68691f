internal import Configuration
internal import Synchronization

/// Where each setting came from, and which lookups failed, as swift-configuration reports its
/// reads: `check-config` prints the source of every effective value, and a value a provider
/// holds but cannot give as the type asked for is told apart from a missing one.
final class ConfigSources: AccessReporter, Sendable {
    struct Record: Sendable {
        /// The provider that answered (the first with a value), nil when none had one.
        var provider: String?
        var failed: Bool
    }

    private let records = Mutex<[String: Record]>([:])

    func report(_ event: AccessEvent) {
        var provider: String?
        var failed = event.conversionError != nil
        if case .failure = event.result { failed = true }
        for result in event.providerResults {
            switch result.result {
            case .success(let lookup) where lookup.value != nil:
                provider = provider ?? result.providerName
            case .failure:
                failed = true
            default:
                break
            }
        }
        let key = event.metadata.key.components.joined(separator: ".")
        records.withLock { $0[key] = Record(provider: provider, failed: failed) }
    }

    func record(_ key: String) -> Record? {
        records.withLock { $0[key] }
    }
}
