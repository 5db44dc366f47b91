"""Visual model-predictive control: goals, the cost, the planner (sampling + gradient through dynamics and
renderer), command safety, and closed-loop episodes on the simulated rig. See docs/mpc.md."""
