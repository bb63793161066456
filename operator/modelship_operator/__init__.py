"""modelship operator: ModelDeployment → Deployment + Service + PDB, rolled forward and back by image."""
