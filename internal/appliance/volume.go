package appliance

import "github.com/distonet/distonet/overlay/volume"

// MakeVolume creates a node's overlay volume: a sparse file formatted ext4 on the appliance,
// so a node never formats over the wire.
func MakeVolume(path string, size int64) error { return volume.Create(path, size) }
