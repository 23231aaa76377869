"""The verifiable log's guardians: the binding check, the integrator (the gate), the auditor."""
