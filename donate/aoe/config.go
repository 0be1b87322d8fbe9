package aoe

import (
	"encoding/binary"
	"fmt"
)

// ConfigArgLen is the fixed part of the Query Config Information argument.
const ConfigArgLen = 8

// MaxConfigString is the longest config string AoE r11 allows.
const MaxConfigString = 1024

// ConfigCommand is the Query Config sub-command (AoE r11 section 3.2).
type ConfigCommand uint8

// Config sub-commands.
const (
	ConfigRead       ConfigCommand = 0 // read the config string
	ConfigTest       ConfigCommand = 1 // answer only if the string matches exactly
	ConfigTestPrefix ConfigCommand = 2 // answer only if the string is a prefix
	ConfigSet        ConfigCommand = 3 // set if empty, else error 4
	ConfigForceSet   ConfigCommand = 4 // set unconditionally
)

// ConfigArg is the Query Config Information argument.
type ConfigArg struct {
	BufferCount     uint16 // frames the target can queue
	FirmwareVersion uint16
	SectorCount     uint8 // max sectors per ATA command (0 means 2)
	Version         uint8 // 4 bits: AoE version the target speaks
	Command         ConfigCommand
	String          []byte // aliases the buffer after UnmarshalBinary
}

// MarshalTo writes the argument into b and returns the bytes written.
func (c *ConfigArg) MarshalTo(b []byte) (int, error) {
	if len(c.String) > MaxConfigString {
		return 0, fmt.Errorf("config arg: string of %d bytes exceeds %d", len(c.String), MaxConfigString)
	}
	if c.Version > 0xf || c.Command > 0xf {
		return 0, fmt.Errorf("config arg: version %d / command %d do not fit 4 bits", c.Version, c.Command)
	}
	n := ConfigArgLen + len(c.String)
	if len(b) < n {
		return 0, fmt.Errorf("config arg: buffer of %d bytes, need %d: %w", len(b), n, ErrShort)
	}
	binary.BigEndian.PutUint16(b[0:2], c.BufferCount)
	binary.BigEndian.PutUint16(b[2:4], c.FirmwareVersion)
	b[4] = c.SectorCount
	b[5] = c.Version<<4 | uint8(c.Command)
	binary.BigEndian.PutUint16(b[6:8], uint16(len(c.String)))
	copy(b[8:], c.String)
	return n, nil
}

// MarshalBinary returns the encoded argument.
func (c *ConfigArg) MarshalBinary() ([]byte, error) {
	b := make([]byte, ConfigArgLen+len(c.String))
	if _, err := c.MarshalTo(b); err != nil {
		return nil, err
	}
	return b, nil
}

// UnmarshalBinary parses the argument; String aliases b.
func (c *ConfigArg) UnmarshalBinary(b []byte) error {
	if len(b) < ConfigArgLen {
		return fmt.Errorf("config arg: %d bytes, want %d: %w", len(b), ConfigArgLen, ErrShort)
	}
	n := int(binary.BigEndian.Uint16(b[6:8]))
	if n > MaxConfigString {
		return fmt.Errorf("config arg: string length %d exceeds %d", n, MaxConfigString)
	}
	if len(b)-ConfigArgLen < n {
		return fmt.Errorf("config arg: string length %d, only %d bytes follow: %w", n, len(b)-ConfigArgLen, ErrShort)
	}
	c.BufferCount = binary.BigEndian.Uint16(b[0:2])
	c.FirmwareVersion = binary.BigEndian.Uint16(b[2:4])
	c.SectorCount = b[4]
	c.Version = b[5] >> 4
	c.Command = ConfigCommand(b[5] & 0xf)
	c.String = b[ConfigArgLen : ConfigArgLen+n : ConfigArgLen+n]
	return nil
}
