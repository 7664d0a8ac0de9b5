"""pyinfra deploys: effects only. Each reads the host's plan and settings, decides nothing."""
