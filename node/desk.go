package node

import "errors"

// newDesk builds the agent's market desk. The market (node/market) plugs in
// here.
func newDesk(a *Agent) (tradingDesk, error) {
	return nil, errors.New("the market is not wired into the agent yet")
}
