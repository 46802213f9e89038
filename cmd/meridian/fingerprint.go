package main

import (
	"fmt"
	"math"
	"runtime"
)

// The agent's default resources, read off the machine (fingerprinted) the
// way Nomad's client does, so that a one-machine agent started with no
// resource flags runs work. Compute is in tasks/hour (placement's C), the
// unit job demands use: the README's and docs' example jobs ask 10 to 400,
// the design's worked example 100 on nodes of 100 to 200.
const (
	// computePerCPU is the compute default per CPU. One CPU then holds the
	// README's 100-task job with 60 % of the node still free, above the
	// region leader's default 50 % local reserve, so even a one-CPU
	// machine places that job at home rather than offering it abroad
	// first; four CPUs make the 1000 tasks/hour of the quickstart's nodes.
	computePerCPU = 250.0
	// pricePerCPU is the price default per CPU, US dollars per hour: about
	// what one vCPU of a general-purpose cloud instance costs on demand
	// (AWS m7i.xlarge, 4 vCPUs, $0.2016/h in us-east-1). Priced per CPU,
	// every fingerprinted machine asks the same per task, so placement
	// between them goes by fit and latency, not by an arbitrary price.
	// Placement refuses a node priced 0, so the default must not be 0.
	pricePerCPU = 0.05
	// defaultBandwidthGBs is the bandwidth default: a 10 Gb/s network
	// interface, common on servers, in GB/s.
	defaultBandwidthGBs = 1.25
	// fallbackStorageGB is the storage default where the data dir's free
	// disk space cannot be read.
	fallbackStorageGB = 100.0
)

// machine is what the agent's resource defaults read of the machine it
// runs on; tests give a fixed one.
type machine struct {
	cpus int
	// freeDiskGB returns the free space, in GB (10⁹ bytes), of the file
	// system that holds dir.
	freeDiskGB func(dir string) (float64, error)
}

// thisMachine is the machine the process runs on.
func thisMachine() machine {
	return machine{cpus: runtime.NumCPU(), freeDiskGB: freeDiskGB}
}

// fingerprint fills the resources c leaves to the defaults (set reports
// whether a flag or the configuration file gave a value, an explicit 0
// included) from machine m, and says what it filled, for the log. A node
// whose compute is explicitly 0 offers nothing: a server that only
// coordinates gets no storage, bandwidth or price either.
func fingerprint(c agentConfig, set func(name string) bool, m machine) (agentConfig, []string) {
	var filled []string
	if !set("compute") {
		c.Compute = computePerCPU * float64(max(m.cpus, 1))
		filled = append(filled, fmt.Sprintf("compute %g tasks/hour (%d CPUs × %g)", c.Compute, max(m.cpus, 1), computePerCPU))
	}
	if c.Compute == 0 {
		return c, filled
	}
	if !set("storage-gb") {
		gb, err := m.freeDiskGB(c.DataDir)
		if err != nil || math.IsNaN(gb) || gb < 0 {
			c.StorageGB = fallbackStorageGB
			filled = append(filled, fmt.Sprintf("storage %g GB (free disk space unknown: %v)", c.StorageGB, err))
		} else {
			c.StorageGB = math.Floor(gb)
			filled = append(filled, fmt.Sprintf("storage %g GB (free disk space of the data dir)", c.StorageGB))
		}
	}
	if !set("bandwidth-gbs") {
		c.BandwidthGBs = defaultBandwidthGBs
		filled = append(filled, fmt.Sprintf("bandwidth %g GB/s (a 10 Gb/s interface)", c.BandwidthGBs))
	}
	if !set("price-per-hour") {
		c.PricePerHour = pricePerCPU * float64(max(m.cpus, 1))
		filled = append(filled, fmt.Sprintf("price $%g/hour ($%g per CPU)", c.PricePerHour, pricePerCPU))
	}
	return c, filled
}
