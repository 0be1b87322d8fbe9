// Package registry is the appliance's embedded, crash-safe state store: enrolled nodes, MACs
// seen at DHCP, boot timelines and the pool inventory. It is a bbolt file in state_dir: every
// acknowledged change is fsynced before the call returns, and bbolt's copy-on-write pages
// mean a kill -9 leaves the last committed state, with no repair step.
//
// One process owns the file at a time (bbolt takes an exclusive lock): the daemon while it
// runs, otherwise the CLI. The CLI finds the lock held and talks to the daemon's API instead.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// FileName is the store's file inside state_dir.
const FileName = "registry.db"

var (
	// ErrLocked means another process (normally the running daemon) holds the store.
	ErrLocked = errors.New("registry is held by another process (is `distonet serve` running?)")
	// ErrNotFound means no such node.
	ErrNotFound = errors.New("not found")
	// ErrExists means the name or MAC is already enrolled.
	ErrExists = errors.New("already enrolled")
)

var (
	bucketMeta       = []byte("meta")
	bucketNodes      = []byte("nodes")      // name -> Node JSON
	bucketMACs       = []byte("macs")       // mac -> name
	bucketDiscovered = []byte("discovered") // mac -> Discovered JSON
	bucketBoots      = []byte("boots")      // name -> Timeline JSON
	bucketDisks      = []byte("disks")      // node/device -> DonatedDisk JSON
	bucketTokens     = []byte("tokens")     // token -> name (boot and agent tokens)
	bucketKV         = []byte("kv")         // small documents (pool plan, ...)
)

// migrations bring a store from version i to i+1. Append only; never edit a shipped one.
var migrations = []func(tx *bolt.Tx) error{
	func(tx *bolt.Tx) error { // v1: the first layout
		for _, b := range [][]byte{bucketNodes, bucketMACs, bucketDiscovered, bucketBoots, bucketDisks, bucketTokens, bucketKV} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
}

// SchemaVersion is the layout version this build writes.
var SchemaVersion = len(migrations)

// Store is the open registry.
type Store struct {
	db *bolt.DB

	mu      sync.Mutex
	watches map[chan struct{}]struct{}
}

// Open opens (creating if needed) the store in stateDir. It waits at most wait for the file
// lock and returns ErrLocked when another process keeps it.
func Open(stateDir string, wait time.Duration) (*Store, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", stateDir, err)
	}
	path := filepath.Join(stateDir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: wait})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, ErrLocked
	}
	if err != nil {
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	s := &Store{db: db, watches: map[chan struct{}]struct{}{}}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("registry %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) migrate() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		v := 0
		if raw := meta.Get([]byte("schema")); raw != nil {
			if err := json.Unmarshal(raw, &v); err != nil {
				return fmt.Errorf("schema version: %w", err)
			}
		}
		if v > len(migrations) {
			return fmt.Errorf("schema version %d is newer than this build knows (%d): upgrade distonet", v, len(migrations))
		}
		for ; v < len(migrations); v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("migration to v%d: %w", v+1, err)
			}
		}
		return meta.Put([]byte("schema"), []byte(fmt.Sprint(v)))
	})
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// Watch returns a channel that receives (without blocking the writer) after every change,
// and a function to stop watching. Servers use it to pick up enrollments at once.
func (s *Store) Watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.watches[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.watches, ch)
		s.mu.Unlock()
	}
}

func (s *Store) changed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.watches {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), raw)
}

// AddNode enrolls a node: validates it, issues its secrets and AoE address, and refuses a
// duplicate name or MAC. The returned node carries its secrets.
func (s *Store) AddNode(n Node) (Node, error) {
	if err := n.Validate(); err != nil {
		return Node{}, err
	}
	n.Created = time.Now().UTC().Truncate(time.Second)
	n.Secrets = Secrets{CHAPSecret: NewSecret(12), BootToken: NewSecret(16), AgentToken: NewSecret(16), DonateCHAP: NewSecret(12)}
	err := s.db.Update(func(tx *bolt.Tx) error {
		nodes, macs := tx.Bucket(bucketNodes), tx.Bucket(bucketMACs)
		if nodes.Get([]byte(n.Name)) != nil {
			return fieldErr("name", fmt.Errorf("node %s: name %w", n.Name, ErrExists))
		}
		if other := macs.Get([]byte(n.MAC)); other != nil {
			return fieldErr("mac", fmt.Errorf("node %s: mac %s %w as %s", n.Name, n.MAC, ErrExists, other))
		}
		if n.IP != "" {
			if other := ipTaken(nodes, n.IP); other != "" {
				return fieldErr("ip", fmt.Errorf("node %s: ip %s %w as %s", n.Name, n.IP, ErrExists, other))
			}
		}
		n.Shelf, n.Slot = nextAoEAddress(nodes)
		tokens := tx.Bucket(bucketTokens)
		for _, tok := range []string{n.Secrets.BootToken, n.Secrets.AgentToken} {
			if err := tokens.Put([]byte(tok), []byte(n.Name)); err != nil {
				return err
			}
		}
		tx.Bucket(bucketDiscovered).Delete([]byte(n.MAC))
		if err := macs.Put([]byte(n.MAC), []byte(n.Name)); err != nil {
			return err
		}
		return putJSON(nodes, n.Name, n)
	})
	if err != nil {
		return Node{}, err
	}
	s.changed()
	return n, nil
}

func ipTaken(nodes *bolt.Bucket, ip string) string {
	var owner string
	_ = nodes.ForEach(func(k, v []byte) error {
		var n Node
		if json.Unmarshal(v, &n) == nil && n.IP == ip {
			owner = n.Name
		}
		return nil
	})
	return owner
}

// nextAoEAddress gives shelf 1, slots 0..15, then shelf 2, ... and reuses freed addresses:
// the lowest address no node holds. (vblade users count shelves from 0; shelf 0 is left to
// hand-configured targets.)
func nextAoEAddress(nodes *bolt.Bucket) (shelf, slot int) {
	used := map[int]bool{}
	_ = nodes.ForEach(func(k, v []byte) error {
		var n Node
		if json.Unmarshal(v, &n) == nil {
			used[n.Shelf*16+n.Slot] = true
		}
		return nil
	})
	for i := 16; ; i++ {
		if !used[i] {
			return i / 16, i % 16
		}
	}
}

// UpdateNode replaces a node's editable fields (group, image, role, donate, volume size, ip),
// keeping its name, MAC, secrets and AoE address.
func (s *Store) UpdateNode(name string, edit func(*Node) error) (Node, error) {
	var out Node
	err := s.db.Update(func(tx *bolt.Tx) error {
		nodes := tx.Bucket(bucketNodes)
		raw := nodes.Get([]byte(name))
		if raw == nil {
			return fmt.Errorf("node %s: %w", name, ErrNotFound)
		}
		var n Node
		if err := json.Unmarshal(raw, &n); err != nil {
			return fmt.Errorf("node %s: %w", name, err)
		}
		keep := n
		if err := edit(&n); err != nil {
			return err
		}
		n.Name, n.MAC, n.Secrets, n.Shelf, n.Slot, n.Created = keep.Name, keep.MAC, keep.Secrets, keep.Shelf, keep.Slot, keep.Created
		if err := n.Validate(); err != nil {
			return err
		}
		out = n
		return putJSON(nodes, name, n)
	})
	if err != nil {
		return Node{}, err
	}
	s.changed()
	return out, nil
}

// RotateBootToken replaces a node's one-time boot token and returns the new one.
func (s *Store) RotateBootToken(name string) (string, error) {
	tok := NewSecret(16)
	err := s.db.Update(func(tx *bolt.Tx) error {
		nodes, tokens := tx.Bucket(bucketNodes), tx.Bucket(bucketTokens)
		raw := nodes.Get([]byte(name))
		if raw == nil {
			return fmt.Errorf("node %s: %w", name, ErrNotFound)
		}
		var n Node
		if err := json.Unmarshal(raw, &n); err != nil {
			return err
		}
		tokens.Delete([]byte(n.Secrets.BootToken))
		n.Secrets.BootToken = tok
		if err := tokens.Put([]byte(tok), []byte(name)); err != nil {
			return err
		}
		return putJSON(nodes, name, n)
	})
	return tok, err
}

// NodeByToken finds the node that owns a boot or agent token.
func (s *Store) NodeByToken(token string) (Node, bool) {
	return s.nodeVia(bucketTokens, token)
}

// nodeVia finds a node through an index bucket that maps a key (MAC, token) to its name.
func (s *Store) nodeVia(index []byte, key string) (Node, bool) {
	var n Node
	found := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		name := tx.Bucket(index).Get([]byte(key))
		if name == nil {
			return nil
		}
		raw := tx.Bucket(bucketNodes).Get(name)
		found = raw != nil && json.Unmarshal(raw, &n) == nil
		return nil
	})
	return n, found
}

// RemoveNode deletes a node, its tokens, timeline and inventory entries.
func (s *Store) RemoveNode(name string) (Node, error) {
	var n Node
	err := s.db.Update(func(tx *bolt.Tx) error {
		nodes := tx.Bucket(bucketNodes)
		raw := nodes.Get([]byte(name))
		if raw == nil {
			return fmt.Errorf("node %s: %w", name, ErrNotFound)
		}
		if err := json.Unmarshal(raw, &n); err != nil {
			return err
		}
		tokens := tx.Bucket(bucketTokens)
		tokens.Delete([]byte(n.Secrets.BootToken))
		tokens.Delete([]byte(n.Secrets.AgentToken))
		tx.Bucket(bucketMACs).Delete([]byte(n.MAC))
		tx.Bucket(bucketBoots).Delete([]byte(name))
		disks := tx.Bucket(bucketDisks)
		c := disks.Cursor()
		prefix := []byte(name + "/")
		for k, _ := c.Seek(prefix); k != nil && len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nodes.Delete([]byte(name))
	})
	if err != nil {
		return Node{}, err
	}
	s.changed()
	return n, nil
}

// Node returns one node with its secrets.
func (s *Store) Node(name string) (Node, error) {
	var n Node
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketNodes).Get([]byte(name))
		if raw == nil {
			return fmt.Errorf("node %s: %w", name, ErrNotFound)
		}
		return json.Unmarshal(raw, &n)
	})
	return n, err
}

// NodeByMAC returns the node enrolled with a MAC.
func (s *Store) NodeByMAC(mac string) (Node, bool) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return Node{}, false
	}
	return s.nodeVia(bucketMACs, mac)
}

// Nodes lists enrolled nodes by name, with secrets.
func (s *Store) Nodes() ([]Node, error) {
	var out []Node
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
			var n Node
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("node %s: %w", k, err)
			}
			out = append(out, n)
			return nil
		})
	})
	return out, err
}

// SeeMAC records a MAC seen at DHCP. Enrolled MACs are ignored; others become (or stay)
// discovered with first/last seen times.
func (s *Store) SeeMAC(d Discovered) error {
	mac, err := NormalizeMAC(d.MAC)
	if err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Second)
	isNew := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMACs).Get([]byte(mac)) != nil {
			return nil
		}
		b := tx.Bucket(bucketDiscovered)
		var prev Discovered
		if raw := b.Get([]byte(mac)); raw != nil {
			_ = json.Unmarshal(raw, &prev)
		}
		d.MAC, d.State, d.LastSeen = mac, "discovered", now
		d.FirstSeen = prev.FirstSeen
		if d.FirstSeen.IsZero() {
			d.FirstSeen, isNew = now, true
		}
		return putJSON(b, mac, d)
	})
	if err == nil && isNew {
		s.changed()
	}
	return err
}

// DiscoveredMACs lists MACs seen but not enrolled, newest first.
func (s *Store) DiscoveredMACs() ([]Discovered, error) {
	var out []Discovered
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDiscovered).ForEach(func(k, v []byte) error {
			var d Discovered
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			out = append(out, d)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].LastSeen.After(out[j].LastSeen) })
	return out, err
}

// ForgetDiscovered drops a discovered MAC.
func (s *Store) ForgetDiscovered(mac string) error {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketDiscovered).Delete([]byte(mac)) })
	if err == nil {
		s.changed()
	}
	return err
}

// PutDoc stores a small JSON document under a key (pool plan, ...).
func (s *Store) PutDoc(key string, v any) error {
	err := s.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bucketKV), key, v) })
	if err == nil {
		s.changed()
	}
	return err
}

// GetDoc reads a document stored by PutDoc; found is false when there is none.
func (s *Store) GetDoc(key string, v any) (found bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketKV).Get([]byte(key))
		if raw == nil {
			return nil
		}
		found = true
		return json.Unmarshal(raw, v)
	})
	return found, err
}
