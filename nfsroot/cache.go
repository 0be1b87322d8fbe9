package nfsroot

import (
	"container/list"
	"sync"

	"golang.org/x/sys/unix"
)

// Published versions never change, so open files and directory listings can be kept
// without any invalidation: the caches below only bound how many are kept.

type fileKey struct {
	t   *tree
	ino uint64
}

// openFile is a cached read-only descriptor of a regular file and its attributes.
type openFile struct {
	key     fileKey
	fd      int
	data    []byte // the whole file mapped read-only; nil when empty or mmap failed
	st      unix.Stat_t
	refs    int
	evicted bool
	elem    *list.Element
}

// fileCache keeps up to max descriptors open, least recently used out first, so a boot
// storm reading the same libraries opens each once. It is sharded by inode so concurrent
// READs of different files do not queue on one lock.
type fileCache struct {
	shards [16]fileShard
}

type fileShard struct {
	mu  sync.Mutex
	m   map[fileKey]*openFile
	lru list.List
	max int
}

func newFileCache(max int) *fileCache {
	c := &fileCache{}
	for i := range c.shards {
		c.shards[i] = fileShard{m: map[fileKey]*openFile{}, max: max/len(c.shards) + 1}
	}
	return c
}

func (c *fileCache) shard(k fileKey) *fileShard { return &c.shards[(k.ino*0x9e3779b97f4a7c15)>>60] }

// open returns the file's descriptor, opening it on a miss. Non-regular files are stat'ed
// but never opened (a device node in an image must not open the host's device).
func (c *fileCache) open(t *tree, ino uint64, rel string) (*openFile, error) {
	key := fileKey{t, ino}
	sh := c.shard(key)
	sh.mu.Lock()
	if f, ok := sh.m[key]; ok {
		f.refs++
		sh.lru.MoveToFront(f.elem)
		sh.mu.Unlock()
		return f, nil
	}
	sh.mu.Unlock()

	st, err := t.lstat(rel)
	if err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return &openFile{key: key, fd: -1, st: st, refs: 1, evicted: true}, nil
	}
	fd, err := t.open(rel, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return nil, err
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if f, ok := sh.m[key]; ok { // another request opened it meanwhile
		unix.Close(fd)
		f.refs++
		sh.lru.MoveToFront(f.elem)
		return f, nil
	}
	f := &openFile{key: key, fd: fd, st: st, refs: 1}
	if st.Size > 0 {
		// READ replies are written from the mapping: one copy into the socket, against
		// two for pread+write. sendfile(2) copies nothing, yet 1 MiB READs to nfs-cat took
		// about 1.6x as long with it as with pread+write over the benchmark's veth.
		// Without a mapping READ falls back to pread.
		if m, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ, unix.MAP_SHARED); err == nil {
			f.data = m
		}
	}
	f.elem = sh.lru.PushFront(f)
	sh.m[key] = f
	for sh.lru.Len() > sh.max {
		old := sh.lru.Remove(sh.lru.Back()).(*openFile)
		delete(sh.m, old.key)
		old.evicted = true
		if old.refs == 0 {
			old.close()
		}
	}
	return f, nil
}

// close unmaps and closes the file once nothing refers to it.
func (f *openFile) close() {
	if f.data != nil {
		_ = unix.Munmap(f.data)
		f.data = nil
	}
	if f.fd >= 0 {
		unix.Close(f.fd)
		f.fd = -1
	}
}

func (c *fileCache) release(f *openFile) {
	sh := c.shard(f.key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	f.refs--
	if f.refs == 0 && f.evicted {
		f.close()
	}
}

// closeAll closes every idle descriptor (at shutdown).
func (c *fileCache) closeAll() {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for key, f := range sh.m {
			delete(sh.m, key)
			f.evicted = true
			if f.refs == 0 {
				f.close()
			}
		}
		sh.lru.Init()
		sh.mu.Unlock()
	}
}

type dirKey struct {
	t   *tree
	ino uint64
}

type dirListing struct {
	key   dirKey
	ready chan struct{}
	ents  []dirEntry
	err   error
}

// dirCache keeps directory listings (names and attributes, sorted by name, so READDIR
// cookies are stable positions) up to max entries in total, oldest out first.
type dirCache struct {
	mu      sync.RWMutex
	m       map[dirKey]*dirListing
	fifo    []*dirListing
	entries int
	max     int
}

func newDirCache(max int) *dirCache { return &dirCache{m: map[dirKey]*dirListing{}, max: max} }

func (c *dirCache) get(t *tree, ino uint64, rel string) ([]dirEntry, error) {
	key := dirKey{t, ino}
	c.mu.RLock()
	l, ok := c.m[key]
	c.mu.RUnlock()
	if ok {
		<-l.ready
		return l.ents, l.err
	}
	c.mu.Lock()
	if l, ok := c.m[key]; ok {
		c.mu.Unlock()
		<-l.ready
		return l.ents, l.err
	}
	l = &dirListing{key: key, ready: make(chan struct{})}
	c.m[key] = l
	c.mu.Unlock()

	l.ents, l.err = t.readDir(rel)
	close(l.ready)

	c.mu.Lock()
	defer c.mu.Unlock()
	if l.err != nil {
		delete(c.m, key)
		return l.ents, l.err
	}
	c.fifo = append(c.fifo, l)
	c.entries += len(l.ents)
	for c.entries > c.max && len(c.fifo) > 1 {
		old := c.fifo[0]
		c.fifo = c.fifo[1:]
		c.entries -= len(old.ents)
		delete(c.m, old.key)
	}
	return l.ents, nil
}

// attrCache keeps file attributes by inode, sharded so concurrent calls rarely meet on a
// lock; a full shard drops an arbitrary entry.
type attrCache struct {
	shards [32]attrShard
	per    int
}

type attrShard struct {
	mu sync.Mutex
	m  map[fileKey]unix.Stat_t
}

func newAttrCache(max int) *attrCache {
	c := &attrCache{per: max/32 + 1}
	for i := range c.shards {
		c.shards[i].m = map[fileKey]unix.Stat_t{}
	}
	return c
}

func (c *attrCache) shard(k fileKey) *attrShard { return &c.shards[(k.ino*0x9e3779b97f4a7c15)>>59] }

func (c *attrCache) get(t *tree, ino uint64) (unix.Stat_t, bool) {
	k := fileKey{t, ino}
	sh := c.shard(k)
	sh.mu.Lock()
	st, ok := sh.m[k]
	sh.mu.Unlock()
	return st, ok
}

func (c *attrCache) put(t *tree, st *unix.Stat_t) {
	k := fileKey{t, st.Ino}
	sh := c.shard(k)
	sh.mu.Lock()
	if len(sh.m) >= c.per {
		for old := range sh.m {
			delete(sh.m, old)
			break
		}
	}
	sh.m[k] = *st
	sh.mu.Unlock()
}

// peek returns a directory's listing only if it is already cached.
func (c *dirCache) peek(t *tree, ino uint64) ([]dirEntry, bool) {
	c.mu.RLock()
	l, ok := c.m[dirKey{t, ino}]
	c.mu.RUnlock()
	if !ok {
		return nil, false
	}
	select {
	case <-l.ready:
		return l.ents, l.err == nil
	default:
		return nil, false
	}
}
