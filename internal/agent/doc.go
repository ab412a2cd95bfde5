// Package agent is the in-sandbox agent: the init process (PID 1) of every
// sandbox, serving AgentService (api/agent/v1) over HTTP/2 cleartext.
//
// It starts processes ("execs") named by the caller, keeps their output in
// bounded per-stream buffers that readers consume by byte offset, accepts
// stdin writes by byte offset, signals process groups and reaps every child
// (including orphans reparented to it when it is PID 1).
//
// Vocabulary:
//   - exec id: the caller's name for one process. Exec with an existing id
//     attaches to it; it never starts a second process.
//   - offset: a byte position in an exec's stdout, stderr or stdin, counted
//     from the start of the process. Offsets make every read resumable and
//     every stdin write idempotent.
//   - sent: the highest offset of a stream that some reader has been sent.
//     Bytes below it may be dropped to make room; bytes above it never are
//     (the agent stops reading the pipe instead: back-pressure).
//
// All state lives in memory, so a gVisor checkpoint saves it and a restore
// resumes it; nothing about the network is cached. The daemon imports this
// package only for Config and its constants; cmd/sandbox-agent wires the rest.
package agent
