// Package network gives each sandbox its own network namespace joined to the
// host by a veth pair, and guards the host against the sandboxes.
//
// Vocabulary: a sandbox id names the sandbox (see the engine); its network
// namespace is named IfPrefix + "-" + id and bind-mounted in NetNSDir like
// `ip netns add` does; the host end of its veth is IfPrefix + a hash of the
// id, the sandbox end is "eth0" inside the namespace. An Endpoint records all
// of it, is stored by the daemon as JSON and re-adopted with Reserve after a
// restart.
//
// Lifecycle: New, EnsureGuard once, then Setup / Teardown per sandbox;
// at start-up Reserve the endpoints the metadata knows and CleanupAll the
// rest. gVisor (runsc --network=sandbox) takes over the namespace's
// interfaces when the sandbox boots; a restored sandbox simply gets a new
// Setup.
//
// Only the engine and the daemon's wiring import this package. Everything here
// needs root except the address allocator.
package network
