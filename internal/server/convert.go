package server

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

var stateToPB = map[sandbox.State]pb.SandboxState{
	sandbox.StateCreating: pb.SandboxState_SANDBOX_STATE_CREATING,
	sandbox.StateRunning:  pb.SandboxState_SANDBOX_STATE_RUNNING,
	sandbox.StateFinished: pb.SandboxState_SANDBOX_STATE_FINISHED,
}

var reasonToPB = map[sandbox.FinishReason]pb.FinishReason{
	sandbox.ReasonExited:     pb.FinishReason_FINISH_REASON_EXITED,
	sandbox.ReasonTerminated: pb.FinishReason_FINISH_REASON_TERMINATED,
	sandbox.ReasonTimeout:    pb.FinishReason_FINISH_REASON_TIMEOUT,
	sandbox.ReasonLost:       pb.FinishReason_FINISH_REASON_LOST,
	sandbox.ReasonFailed:     pb.FinishReason_FINISH_REASON_FAILED,
}

func sandboxToPB(sb *sandbox.Sandbox) *pb.Sandbox {
	s := sb.Spec
	return &pb.Sandbox{
		Id: sb.ID, App: s.App, Name: s.Name, Image: s.Image, ImageId: sb.ImageID,
		Entrypoint: s.Entrypoint, Env: s.Env, Secrets: s.Secrets, Workdir: s.Workdir,
		TimeoutMs: s.Timeout.Milliseconds(),
		Resources: &pb.Resources{Cpu: s.Resources.CPU, MemoryMib: s.Resources.MemoryMiB, Pids: s.Resources.Pids},
		Tags:      sb.Tags, State: stateToPB[sb.State], FinishReason: reasonToPB[sb.FinishReason],
		ExitCode: int32(sb.ExitCode), CreatedAt: ts(sb.CreatedAt), StartedAt: ts(sb.StartedAt),
		FinishedAt: ts(sb.FinishedAt), Deadline: ts(sb.Deadline), Error: sb.Error,
	}
}
