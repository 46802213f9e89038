package workload

import (
	"fmt"
	"slices"
	"time"
)

// Region is an AWS region and its standard time.
type Region struct {
	// Name is the AWS region code, for example "us-east-1".
	Name string
	// Location is the city or area the region serves.
	Location string
	// UTCOffset is the region's standard-time offset from UTC.
	UTCOffset time.Duration
}

// awsRegions lists the 21 regions of the embedded RTT matrix and the two
// more of the embedded price list (ap-southeast-3, me-central-1), with the
// standard offset of the time zone of the city each is in. Daylight saving
// time is ignored on purpose: a demand envelope that jumps by an hour
// twice a year in some regions only would make runs depend on the date.
var awsRegions = []Region{
	{"af-south-1", "Cape Town", 2 * time.Hour},
	{"ap-east-1", "Hong Kong", 8 * time.Hour},
	{"ap-northeast-1", "Tokyo", 9 * time.Hour},
	{"ap-northeast-2", "Seoul", 9 * time.Hour},
	{"ap-northeast-3", "Osaka", 9 * time.Hour},
	{"ap-south-1", "Mumbai", 5*time.Hour + 30*time.Minute},
	{"ap-southeast-1", "Singapore", 8 * time.Hour},
	{"ap-southeast-2", "Sydney", 10 * time.Hour},
	{"ap-southeast-3", "Jakarta", 7 * time.Hour},
	{"ca-central-1", "Montreal", -5 * time.Hour},
	{"eu-central-1", "Frankfurt", 1 * time.Hour},
	{"eu-north-1", "Stockholm", 1 * time.Hour},
	{"eu-south-1", "Milan", 1 * time.Hour},
	{"eu-west-1", "Dublin", 0},
	{"eu-west-2", "London", 0},
	{"eu-west-3", "Paris", 1 * time.Hour},
	{"me-central-1", "UAE", 4 * time.Hour},
	{"me-south-1", "Bahrain", 3 * time.Hour},
	{"sa-east-1", "São Paulo", -3 * time.Hour},
	{"us-east-1", "N. Virginia", -5 * time.Hour},
	{"us-east-2", "Ohio", -5 * time.Hour},
	{"us-west-1", "N. California", -8 * time.Hour},
	{"us-west-2", "Oregon", -8 * time.Hour},
}

// AWSRegions returns the table of AWS regions with their standard UTC
// offsets, sorted by name.
func AWSRegions() []Region { return slices.Clone(awsRegions) }

// UTCOffset returns the standard UTC offset of an AWS region of the table.
func UTCOffset(region string) (time.Duration, error) {
	for _, r := range awsRegions {
		if r.Name == region {
			return r.UTCOffset, nil
		}
	}
	return 0, fmt.Errorf("region %q: no UTC offset known (give one explicitly)", region)
}
