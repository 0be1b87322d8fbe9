package aoe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// MaxMasks is how many MACs the mask list holds (vblade's limit too).
const MaxMasks = 32

// targetState is what a target remembers across restarts: vblade keeps it in memory only, so a
// restarted donor would suddenly answer everyone.
type targetState struct {
	mu      sync.RWMutex
	path    string // "" = not persisted
	config  []byte
	masks   []net.HardwareAddr
	reserve []net.HardwareAddr
}

type stateFile struct {
	Config  string   `json:"config"`
	Masks   []string `json:"masks"`
	Reserve []string `json:"reserve"`
}

func loadState(path string) (*targetState, error) {
	s := &targetState{path: path}
	if path == "" {
		return s, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read aoe state %s: %w", path, err)
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parse aoe state %s: %w", path, err)
	}
	if len(f.Config) > MaxConfigString {
		return nil, fmt.Errorf("aoe state %s: config string of %d bytes exceeds %d", path, len(f.Config), MaxConfigString)
	}
	s.config = []byte(f.Config)
	for _, list := range []struct {
		key string
		in  []string
		out *[]net.HardwareAddr
	}{{"masks", f.Masks, &s.masks}, {"reserve", f.Reserve, &s.reserve}} {
		for _, m := range list.in {
			hw, err := net.ParseMAC(m)
			if err != nil || len(hw) != 6 {
				return nil, fmt.Errorf("aoe state %s: %s: bad mac %q", path, list.key, m)
			}
			*list.out = append(*list.out, hw)
		}
	}
	return s, nil
}

// saveLocked writes the state atomically (temp file, fsync, rename, fsync dir). Caller holds mu.
func (s *targetState) saveLocked() error {
	if s.path == "" {
		return nil
	}
	f := stateFile{Config: string(s.config), Masks: []string{}, Reserve: []string{}}
	for _, m := range s.masks {
		f.Masks = append(f.Masks, m.String())
	}
	for _, m := range s.reserve {
		f.Reserve = append(f.Reserve, m.String())
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, ".aoe-state-*")
	if err != nil {
		return fmt.Errorf("save aoe state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save aoe state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save aoe state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save aoe state: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("save aoe state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func containsMAC(list []net.HardwareAddr, m net.HardwareAddr) bool {
	return slices.ContainsFunc(list, func(x net.HardwareAddr) bool { return bytes.Equal(x, m) })
}

// maskAllows reports whether src may talk to the target at all (empty list = everyone).
func (s *targetState) maskAllows(src net.HardwareAddr) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.masks) == 0 || containsMAC(s.masks, src)
}

// reserveAllows reports whether src may issue ATA commands (empty list = not reserved).
func (s *targetState) reserveAllows(src net.HardwareAddr) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.reserve) == 0 || containsMAC(s.reserve, src)
}

// addMasks adds MACs to the list (used to seed it from the configuration) and saves.
func (s *targetState) addMasks(macs []net.HardwareAddr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for _, m := range macs {
		if len(m) != 6 {
			return fmt.Errorf("allow mac %q: not a 6-byte Ethernet address", m)
		}
		if !containsMAC(s.masks, m) {
			if len(s.masks) >= MaxMasks {
				return fmt.Errorf("allow mac %s: mask list full (%d)", m, MaxMasks)
			}
			s.masks = append(s.masks, slices.Clone(m))
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return s.saveLocked()
}

// Masks returns a copy of the MAC mask list.
func (s *targetState) Masks() []net.HardwareAddr {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return cloneMACs(s.masks)
}

// Reserve returns a copy of the reserve list.
func (s *targetState) Reserve() []net.HardwareAddr {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return cloneMACs(s.reserve)
}

func cloneMACs(in []net.HardwareAddr) []net.HardwareAddr {
	out := make([]net.HardwareAddr, len(in))
	for i, m := range in {
		out[i] = slices.Clone(m)
	}
	return out
}
