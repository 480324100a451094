"""Deployment files, installed with the package so ``meterpipe run`` finds them:
supervisord.conf (all processes under supervisord) and meterpipe.service (systemd)."""
