package network

import (
	"net"
	"net/netip"
	"strconv"
)

// Endpoint is one sandbox's side of the network as Setup made it. It is a
// plain value, serialised to JSON by the daemon and handed back to Reserve and
// Teardown.
type Endpoint struct {
	NetNSName string     `json:"netns_name"` // IfPrefix-<sandbox id>, as `ip netns list` shows it
	NetNSPath string     `json:"netns_path"` // bind-mounted nsfs file; the OCI spec's network namespace path
	HostIf    string     `json:"host_if"`    // host end of the veth; "eth0" is the sandbox end
	HostIP    netip.Addr `json:"host_ip"`    // address of HostIf, the sandbox's default gateway
	SandboxIP netip.Addr `json:"sandbox_ip"` // address of eth0 inside the namespace
	PrefixLen int        `json:"prefix_len"` // of both addresses
}

// AgentAddr returns "SandboxIP:port", the address the daemon dials to reach
// a server listening inside the sandbox.
func (e Endpoint) AgentAddr(port int) string {
	return net.JoinHostPort(e.SandboxIP.String(), strconv.Itoa(port))
}
