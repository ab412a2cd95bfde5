package image

// The big buffers layers go through are kept between uses, in lists that
// hold on to them, rather than in a sync.Pool: the pool drops its contents
// at every other garbage collection, the runtime then hands the memory back
// to the kernel, and the next snapshot touches it afresh. On this project's
// machines (virtual machines without nested paging) every page touched
// afresh costs a fault of 15-25 µs: 1 MiB is 4-6 ms, and a 1 MiB snapshot
// went through several such buffers. A kept buffer costs only the pages it
// has touched.

// bufList is a bounded list of byte buffers of one size. Safe for
// concurrent use.
type bufList struct {
	size int
	free chan *[]byte
}

func newBufList(size, keep int) *bufList {
	return &bufList{size: size, free: make(chan *[]byte, keep)}
}

// get returns a buffer of l.size bytes (contents undefined).
func (l *bufList) get() *[]byte {
	select {
	case b := <-l.free:
		return b
	default:
		b := make([]byte, l.size)
		return &b
	}
}

// put gives b back; beyond the bound it is left to the collector.
func (l *bufList) put(b *[]byte) {
	if b == nil || len(*b) != l.size {
		return
	}
	select {
	case l.free <- b:
	default:
	}
}

// The lists. Package-level like the sync.Pools they replace: a buffer has
// no owner between uses. They keep at most 8 blocks of 1 MiB (tar stream
// buffers, extraction, read-ahead of big files) and the small files' bodies
// read ahead for one canonical tar (see writeCanonicalTar), of which only
// the pages used are resident.
var (
	copyBlocks      = newBufList(copyBufSize, 8)
	readAheadBodies = newBufList(readAheadMax+1, canonWindow+2*canonWorkers)
)
