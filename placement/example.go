package placement

// ExampleDemand is the demand of the design's worked example, in tasks/hour.
const ExampleDemand = 100.0

// ExampleNodes returns the three nodes of the design's worked example:
//
//	node1: C=200 tasks/h, S=500 GB, B=10 GB/s, $1000/h
//	node2: C=150 tasks/h, S=300 GB, B=5 GB/s,  $800/h
//	node3: C=100 tasks/h, S=200 GB, B=2 GB/s,  $500/h
//
// For ExampleDemand their cost efficiencies E = C·D/c are 20, 18.75 and 20,
// and node1 is chosen. Free equals total: nothing is allocated yet.
func ExampleNodes() []Node {
	mk := func(id string, c, s, b, price float64) Node {
		r := Resources{ComputePerHour: c, StorageGB: s, BandwidthGBps: b}
		return Node{ID: id, Total: r, Free: r, PricePerHour: price}
	}
	return []Node{
		mk("node1", 200, 500, 10, 1000),
		mk("node2", 150, 300, 5, 800),
		mk("node3", 100, 200, 2, 500),
	}
}
