package registry

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Stage is one step of a boot as the appliance saw it or the node reported it.
type Stage struct {
	Stage   string    `json:"stage"`
	OK      bool      `json:"ok"`
	Message string    `json:"message,omitempty"`
	Time    time.Time `json:"time"`
	// Since is the time from the boot's first event (normally the DHCP DISCOVER).
	Since time.Duration `json:"since_ns"`
}

// Boot is one boot of a node, from DHCP to ready.
type Boot struct {
	Started time.Time `json:"started"`
	IP      string    `json:"ip,omitempty"`
	Stages  []Stage   `json:"stages"`
}

// Timeline keeps a node's latest boots, newest last.
type Timeline struct {
	Boots []Boot `json:"boots"`
}

// keptBoots bounds a node's history.
const keptBoots = 10

// bootGap separates boots: a DHCP stage this long after the last event starts a new boot.
const bootGap = 30 * time.Second

// RecordStage appends a stage to the node's current boot. A "dhcp" stage that comes after the
// boot has moved on (or long after its last event) starts a new boot.
func (s *Store) RecordStage(node string, st Stage, ip string) error {
	if st.Time.IsZero() {
		st.Time = time.Now().UTC()
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBoots)
		var tl Timeline
		if raw := b.Get([]byte(node)); raw != nil {
			if err := json.Unmarshal(raw, &tl); err != nil {
				return fmt.Errorf("timeline %s: %w", node, err)
			}
		}
		startNew := len(tl.Boots) == 0
		if !startNew && st.Stage == "dhcp" {
			cur := tl.Boots[len(tl.Boots)-1]
			last := cur.Stages[len(cur.Stages)-1]
			startNew = last.Stage != "dhcp" || st.Time.Sub(last.Time) > bootGap
		}
		if startNew {
			tl.Boots = append(tl.Boots, Boot{Started: st.Time})
			if len(tl.Boots) > keptBoots {
				tl.Boots = tl.Boots[len(tl.Boots)-keptBoots:]
			}
		}
		cur := &tl.Boots[len(tl.Boots)-1]
		if st.Stage == "dhcp" && len(cur.Stages) > 0 {
			// DISCOVER, REQUEST and renewals within one boot are one stage: keep the first.
			if ip != "" {
				cur.IP = ip
			}
			return putJSON(b, node, tl)
		}
		st.Since = st.Time.Sub(cur.Started)
		if ip != "" {
			cur.IP = ip
		}
		cur.Stages = append(cur.Stages, st)
		return putJSON(b, node, tl)
	})
	if err == nil {
		s.changed()
	}
	return err
}

// Timeline returns a node's recorded boots.
func (s *Store) Timeline(node string) (Timeline, error) {
	var tl Timeline
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketBoots).Get([]byte(node))
		if raw == nil {
			return nil
		}
		return json.Unmarshal(raw, &tl)
	})
	return tl, err
}

// LastBoot is the node's newest boot, if any.
func (tl Timeline) LastBoot() (Boot, bool) {
	if len(tl.Boots) == 0 {
		return Boot{}, false
	}
	return tl.Boots[len(tl.Boots)-1], true
}

// DonatedDisk is one disk in the pool inventory.
type DonatedDisk struct {
	Node      string    `json:"node"`
	Group     string    `json:"group,omitempty"`
	Device    string    `json:"device"`
	Transport string    `json:"transport"` // aoe | iscsi
	Address   string    `json:"address"`   // e<shelf>.<slot> or the target IQN
	SizeBytes int64     `json:"size_bytes"`
	State     string    `json:"state"` // online | offline | withdrawing | withdrawn
	Window    string    `json:"window,omitempty"`
	MAC       string    `json:"mac,omitempty"`    // the donor's MAC (AoE)
	Portal    string    `json:"portal,omitempty"` // iSCSI portal
	LastSeen  time.Time `json:"last_seen"`
}

// PutDisk records or refreshes a donated disk.
func (s *Store) PutDisk(d DonatedDisk) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketNodes).Get([]byte(d.Node)) == nil {
			return fmt.Errorf("disk of node %s: %w", d.Node, ErrNotFound)
		}
		return putJSON(tx.Bucket(bucketDisks), d.Node+"/"+d.Device, d)
	})
	if err == nil {
		s.changed()
	}
	return err
}

// Disks lists the pool inventory.
func (s *Store) Disks() ([]DonatedDisk, error) {
	var out []DonatedDisk
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDisks).ForEach(func(k, v []byte) error {
			var d DonatedDisk
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("disk %s: %w", k, err)
			}
			out = append(out, d)
			return nil
		})
	})
	return out, err
}

// UpdateDisks applies fn to every disk of a node (state changes on heartbeat loss, withdrawal).
func (s *Store) UpdateDisks(node string, fn func(*DonatedDisk)) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDisks)
		prefix := node + "/"
		c := b.Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && len(k) >= len(prefix) && string(k[:len(prefix)]) == prefix; k, v = c.Next() {
			var d DonatedDisk
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			fn(&d)
			if err := putJSON(b, string(k), d); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.changed()
	}
	return err
}
