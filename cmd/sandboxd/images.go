package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/sandboxd/sandboxd/internal/image"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

var _ sandbox.ImageBuilder = imageAdapter{}

func infoOf(im image.Image) sandbox.ImageInfo {
	info := sandbox.ImageInfo{ID: im.ID, Env: im.Config.Env, Workdir: im.Config.Workdir}
	for _, l := range im.Layers {
		info.Layers = append(info.Layers, string(l))
	}
	return info
}

func digestsOf(info sandbox.ImageInfo) []image.Digest {
	out := make([]image.Digest, 0, len(info.Layers)+1)
	for _, l := range info.Layers {
		out = append(out, image.Digest(l))
	}
	return out
}

func (a imageAdapter) ImageFromDiff(ctx context.Context, base sandbox.ImageInfo, diff sandbox.RootfsDiff, source string, o sandbox.ImageOptions) (sandbox.ImageInfo, error) {
	d, err := a.s.AddLayerFromUpperTar(ctx, diff.Tar, image.KeepExcept(diff.Exclude...))
	if err != nil {
		return sandbox.ImageInfo{}, err
	}
	cfg := image.ImageConfig{Env: base.Env, Workdir: base.Workdir}
	return a.imageOver(ctx, d, append(digestsOf(base), d), cfg, source, o)
}

func (a imageAdapter) ImageFromDir(ctx context.Context, base sandbox.ImageInfo, diff sandbox.RootfsDiff, dir, source string, o sandbox.ImageOptions) (sandbox.ImageInfo, error) {
	d, err := a.s.AddDirLayer(ctx, digestsOf(base), diff.Tar, dir)
	if err != nil {
		return sandbox.ImageInfo{}, err
	}
	return a.imageOver(ctx, d, []image.Digest{d}, image.ImageConfig{}, source, o)
}

// imageOver records the image of a snapshot whose new layer is d (see
// createImage); when that fails (the call was cancelled, say), d goes
// again unless an image uses it.
func (a imageAdapter) imageOver(ctx context.Context, d image.Digest, layers []image.Digest, cfg image.ImageConfig, source string, o sandbox.ImageOptions) (sandbox.ImageInfo, error) {
	info, err := a.createImage(ctx, layers, cfg, source, o)
	if err != nil {
		if derr := a.s.DropLayerIfUnused(context.WithoutCancel(ctx), d); derr != nil {
			err = errors.Join(err, fmt.Errorf("drop layer %s: %w", d, derr))
		}
	}
	return info, err
}

// createImage records the image of a snapshot, made of layers. With
// o.WaitDurable it first waits until the layers are on disk: the new one,
// and those below it (the sandbox may have started from a snapshot still
// being flushed; a durable layer costs one query).
func (a imageAdapter) createImage(ctx context.Context, layers []image.Digest, cfg image.ImageConfig, source string, o sandbox.ImageOptions) (sandbox.ImageInfo, error) {
	if o.WaitDurable {
		for _, d := range layers {
			if err := a.s.WaitDurable(ctx, d); err != nil {
				return sandbox.ImageInfo{}, err
			}
		}
	}
	im, err := a.s.CreateImageWithTTL(ctx, layers, cfg, source, o.TTL)
	if err != nil {
		return sandbox.ImageInfo{}, err
	}
	return infoOf(im), nil
}

func (a imageAdapter) DeleteImage(ctx context.Context, id string) error { return a.s.Delete(ctx, id) }

func (a imageAdapter) CollectExpired(ctx context.Context, inUse func(string) bool) ([]string, error) {
	return a.s.CollectExpired(ctx, inUse)
}
