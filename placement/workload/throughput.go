package workload

import (
	"fmt"
	"math"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// Throughput is the model that turns a request's tokens into GPU work and a
// placement.Job. A task, the unit of compute in Meridian's cost model, is
// GPUSecondsPerTask GPU-seconds of the reference GPU; a node of g GPUs
// therefore offers g·3600/GPUSecondsPerTask tasks/hour.
//
// For a request of c context and n generated tokens:
//
//	GPU-seconds  = max(MinGPUSeconds, c/PrefillTokensPerSecond + n/DecodeTokensPerSecond)
//	service time = max(1 ms, c/PrefillTokensPerSecond + n/SequenceDecodeTokensPerSecond)
//
// Prefill runs at the GPU's full speed; decode shares the GPU with the
// other sequences of a continuous batch, so a request's share of the GPU
// is its tokens over the batch's aggregate rate while its own tokens come
// at the (slower) single-sequence rate. The job asks for the GPU-seconds
// spread over the service time: Demand.ComputePerHour = tasks / hours.
// docs/forecast-and-workload.md derives the default numbers.
type Throughput struct {
	// PrefillTokensPerSecond is the prompt-processing rate of one GPU.
	PrefillTokensPerSecond float64 `json:"prefill_tokens_per_second"`
	// DecodeTokensPerSecond is the aggregate generation rate of one GPU
	// under continuous batching.
	DecodeTokensPerSecond float64 `json:"decode_tokens_per_second"`
	// SequenceDecodeTokensPerSecond is the generation rate one sequence
	// sees; at most DecodeTokensPerSecond.
	SequenceDecodeTokensPerSecond float64 `json:"sequence_decode_tokens_per_second"`
	// GPUSecondsPerTask defines the task: GPU-seconds per task.
	GPUSecondsPerTask float64 `json:"gpu_seconds_per_task"`
	// MinGPUSeconds is the least work a request is charged, so a request
	// of zero tokens still demands something.
	MinGPUSeconds float64 `json:"min_gpu_seconds"`
	// KVBytesPerToken is the KV-cache memory one token holds while its
	// request runs; a job's StorageGB is its tokens' KV cache.
	KVBytesPerToken float64 `json:"kv_bytes_per_token"`
	// WireBytesPerToken is the network bytes per prompt or output token;
	// a job's BandwidthGBps is its tokens' bytes over its service time.
	WireBytesPerToken float64 `json:"wire_bytes_per_token"`
	// GPUMemoryGB is one GPU's memory; GPUMemoryGB − ModelWeightsGB is the
	// KV-cache room a node's capacity offers per GPU.
	GPUMemoryGB float64 `json:"gpu_memory_gb"`
	// ModelWeightsGB is the memory the model's weights take on each GPU.
	ModelWeightsGB float64 `json:"model_weights_gb"`
	// NetworkGBpsPerGPU is a node's network bandwidth per GPU.
	NetworkGBpsPerGPU float64 `json:"network_gbps_per_gpu"`
}

// DefaultThroughput is a 13-billion-parameter decoder in FP16 served on one
// NVIDIA A100 40 GB of a p4d.24xlarge per replica (see the doc for the
// derivation): prefill 6,000 tokens/s, decode 1,200 tokens/s per GPU
// aggregate and 40 tokens/s per sequence, 819,200 KV bytes per token,
// 26 GB of weights in 40 GB, 4 wire bytes per token, 400 Gb/s per 8 GPUs.
func DefaultThroughput() Throughput {
	return Throughput{
		PrefillTokensPerSecond:        6000,
		DecodeTokensPerSecond:         1200,
		SequenceDecodeTokensPerSecond: 40,
		GPUSecondsPerTask:             1,
		MinGPUSeconds:                 0.001,
		KVBytesPerToken:               2 * 40 * 5120 * 2,
		WireBytesPerToken:             4,
		GPUMemoryGB:                   40,
		ModelWeightsGB:                26,
		NetworkGBpsPerGPU:             400.0 / 8 / 8,
	}
}

// Validate checks that every rate is positive and every size finite and
// not negative.
func (t Throughput) Validate() error {
	for _, f := range []struct {
		name     string
		v        float64
		positive bool
	}{
		{"prefill_tokens_per_second", t.PrefillTokensPerSecond, true},
		{"decode_tokens_per_second", t.DecodeTokensPerSecond, true},
		{"sequence_decode_tokens_per_second", t.SequenceDecodeTokensPerSecond, true},
		{"gpu_seconds_per_task", t.GPUSecondsPerTask, true},
		{"min_gpu_seconds", t.MinGPUSeconds, true},
		{"kv_bytes_per_token", t.KVBytesPerToken, false},
		{"wire_bytes_per_token", t.WireBytesPerToken, false},
		{"gpu_memory_gb", t.GPUMemoryGB, false},
		{"model_weights_gb", t.ModelWeightsGB, false},
		{"network_gbps_per_gpu", t.NetworkGBpsPerGPU, false},
	} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 || (f.positive && f.v == 0) {
			want := "a finite number ≥ 0"
			if f.positive {
				want = "a finite number > 0"
			}
			return &placement.FieldError{Field: "throughput." + f.name, Reason: fmt.Sprintf("must be %s, got %v", want, f.v)}
		}
	}
	if t.SequenceDecodeTokensPerSecond > t.DecodeTokensPerSecond {
		return &placement.FieldError{Field: "throughput.sequence_decode_tokens_per_second",
			Reason: fmt.Sprintf("%v is above decode_tokens_per_second %v: one sequence cannot decode faster than the whole GPU", t.SequenceDecodeTokensPerSecond, t.DecodeTokensPerSecond)}
	}
	return nil
}

// GPUSeconds returns the GPU work of a request.
func (t Throughput) GPUSeconds(contextTokens, generatedTokens int) float64 {
	return max(t.MinGPUSeconds, float64(contextTokens)/t.PrefillTokensPerSecond+float64(generatedTokens)/t.DecodeTokensPerSecond)
}

// ServiceTime returns how long a request runs: prefill at full speed, then
// decode at the single-sequence rate; at least a millisecond.
func (t Throughput) ServiceTime(contextTokens, generatedTokens int) time.Duration {
	s := float64(contextTokens)/t.PrefillTokensPerSecond + float64(generatedTokens)/t.SequenceDecodeTokensPerSecond
	if ns := math.Round(s * 1e9); ns < math.MaxInt64 {
		return max(time.Millisecond, time.Duration(ns))
	}
	return time.Duration(math.MaxInt64)
}

// Demand returns what a request asks of a node and for how long:
// ComputePerHour·Duration = its GPU-seconds in tasks; StorageGB its KV
// cache; BandwidthGBps its wire bytes over its duration. GPUs is 0: requests
// share GPUs.
func (t Throughput) Demand(contextTokens, generatedTokens int) (placement.Resources, time.Duration) {
	d := t.ServiceTime(contextTokens, generatedTokens)
	tasks := t.GPUSeconds(contextTokens, generatedTokens) / t.GPUSecondsPerTask
	tokens := float64(contextTokens) + float64(generatedTokens)
	return placement.Resources{
		ComputePerHour: tasks / d.Hours(),
		StorageGB:      tokens * t.KVBytesPerToken / 1e9,
		BandwidthGBps:  tokens * t.WireBytesPerToken / 1e9 / d.Seconds(),
	}, d
}

// NodeCapacity returns the capacity of a node of gpus GPUs of the reference
// kind in the units Demand uses: gpus·3600/GPUSecondsPerTask tasks/hour,
// the KV-cache room left by the weights, and the node's network bandwidth.
func (t Throughput) NodeCapacity(gpus int) placement.Resources {
	g := float64(max(0, gpus))
	return placement.Resources{
		ComputePerHour: g * 3600 / t.GPUSecondsPerTask,
		StorageGB:      g * max(0, t.GPUMemoryGB-t.ModelWeightsGB),
		BandwidthGBps:  g * t.NetworkGBpsPerGPU,
		GPUs:           max(0, gpus),
	}
}
