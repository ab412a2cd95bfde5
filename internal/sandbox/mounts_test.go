package sandbox

import (
	"context"
	"testing"
)

// namedImages resolves names to whatever id they point at now, and ids to
// themselves.
type namedImages map[string]string // name -> id

func (n namedImages) ResolveImage(ctx context.Context, ref string) (ImageInfo, error) {
	if id, ok := n[ref]; ok {
		return ImageInfo{ID: id, Layers: []string{"sha256:" + id}}, nil
	}
	return ImageInfo{ID: ref, Layers: []string{"sha256:" + ref}}, nil
}

// A spec kept by a snapshot resolves its mounts by the ids recorded at
// create, even when the name now points at another image.
func TestResolveMountsPrefersRecordedID(t *testing.T) {
	imgs := namedImages{"project": "im-new"}
	m := &Manager{images: imgs}
	spec := Spec{Mounts: []ImageMount{
		{Image: "project", Path: "/work", ImageID: "im-old"},
		{Image: "project", Path: "/fresh/"},
	}}
	got, err := m.resolveMounts(context.Background(), &spec)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Image.ID != "im-old" || spec.Mounts[0].ImageID != "im-old" {
		t.Errorf("recorded mount resolved to %q (spec %q), want im-old", got[0].Image.ID, spec.Mounts[0].ImageID)
	}
	if got[1].Image.ID != "im-new" || spec.Mounts[1].ImageID != "im-new" || spec.Mounts[1].Path != "/fresh" {
		t.Errorf("new mount: %+v, spec %+v; want im-new at /fresh", got[1], spec.Mounts[1])
	}
}
