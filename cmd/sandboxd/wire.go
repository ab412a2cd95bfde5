package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/agentclient"
	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/image"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/server"
	"github.com/sandboxd/sandboxd/internal/store"
)

// openImages opens the metadata database and the image store of cfg.
func openImages(ctx context.Context, cfg *Config, log *slog.Logger) (*sql.DB, *image.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return nil, nil, err
	}
	db, err := store.Open(ctx, filepath.Join(cfg.DataDir, "meta.db"))
	if err != nil {
		return nil, nil, err
	}
	imgs, err := image.New(db, cfg.DataDir, log.With("component", "image"), clock.Real{}, image.BaseConfig{
		CacheDir: cfg.CacheDir, Mirror: cfg.Mirror,
	})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	imgs.CheckStreamedDigests(cfg.CheckDigests)
	switch cfg.LayerFormat {
	case "auto", "":
	case "tree":
		imgs.UseTreeLayers()
	default:
		db.Close()
		return nil, nil, fmt.Errorf("--layer-format: want auto or tree, not %q", cfg.LayerFormat)
	}
	if err := imgs.Startup(ctx); err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, imgs, nil
}

// ensureBases builds or imports the base images, printing progress to w.
func ensureBases(ctx context.Context, imgs *image.Store, names []string, w io.Writer) error {
	for _, name := range names {
		fmt.Fprintf(w, "base image %s: preparing\n", name)
		im, err := imgs.EnsureBase(ctx, name, w)
		if err != nil {
			return fmt.Errorf("base image %s: %w", name, err)
		}
		fmt.Fprintf(w, "base image %s: ready (%s, %d MiB)\n", name, im.ID, im.Size>>20)
	}
	return nil
}

// loadToken reads DATA/token, creating it (mode 0600) on first start.
func loadToken(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "token")
	if b, err := os.ReadFile(path); err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	}
	var b [32]byte
	rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	return tok, nil
}

// imageAdapter shows the image store to the manager and the API.
type imageAdapter struct{ s *image.Store }

func (a imageAdapter) ResolveImage(ctx context.Context, ref string) (sandbox.ImageInfo, error) {
	im, err := a.s.Resolve(ctx, ref)
	if err != nil {
		return sandbox.ImageInfo{}, err
	}
	a.s.TouchLastUsed(ctx, im.ID)
	info := sandbox.ImageInfo{ID: im.ID, Env: im.Config.Env, Workdir: im.Config.Workdir}
	for _, l := range im.Layers {
		info.Layers = append(info.Layers, string(l))
	}
	return info, nil
}

func viewOf(im image.Image) server.ImageView {
	v := server.ImageView{ID: im.ID, Names: im.Names, Size: im.Size, CreatedAt: im.CreatedAt, Source: im.Source,
		LastUsed: im.LastUsed, IdleTTL: im.IdleTTL, ExpiresAt: im.ExpiresAt, Durable: im.Durable}
	for _, l := range im.Layers {
		v.Layers = append(v.Layers, string(l))
	}
	return v
}

func (a imageAdapter) ListImages(ctx context.Context) ([]server.ImageView, error) {
	list, err := a.s.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]server.ImageView, 0, len(list))
	for _, im := range list {
		out = append(out, viewOf(im))
	}
	return out, nil
}

func (a imageAdapter) GetImage(ctx context.Context, ref string) (server.ImageView, error) {
	im, err := a.s.Resolve(ctx, ref)
	if err != nil {
		return server.ImageView{}, err
	}
	return viewOf(im), nil
}

// agentDialer makes agent connections for the manager.
type agentDialer struct{ log *slog.Logger }

func (d agentDialer) Dial(addr, token string) (sandbox.AgentConn, error) {
	return agentConn{c: agentclient.New(addr, token), log: d.log}, nil
}

type agentConn struct {
	c   *agentclient.Client
	log *slog.Logger // for exec streams that resume; nil: none
}

func (a agentConn) WaitReady(ctx context.Context) error {
	_, err := a.c.WaitReady(ctx)
	return err
}

func (a agentConn) Exec(ctx context.Context, req *agentv1.ExecRequest) (sandbox.ExecStream, error) {
	s, err := a.c.Exec(ctx, req)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Follow streams a client's exec across broken and stalled connections
// (agentclient.FollowStream).
func (a agentConn) Follow(ctx context.Context, req *agentv1.ExecRequest) (sandbox.ExecStream, error) {
	return a.c.Follow(ctx, req, agentclient.FollowOptions{Log: a.log}), nil
}

func (a agentConn) WriteStdin(ctx context.Context, id string, off int64, data []byte, close bool) (int64, error) {
	return a.c.WriteStdin(ctx, id, off, data, close)
}

func (a agentConn) Signal(ctx context.Context, id string, sig syscall.Signal) error {
	return a.c.Signal(ctx, id, sig)
}

func (a agentConn) Close() { a.c.Close() }

// Configure completes an agent started idle (warm pools).
func (a agentConn) Configure(ctx context.Context, env []string, workdir string, entrypoint []string) error {
	return a.c.Configure(ctx, env, workdir, entrypoint)
}

var _ sandbox.Configurer = agentConn{}
var _ sandbox.ExecFollower = agentConn{}
