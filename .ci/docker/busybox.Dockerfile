# Stand-in for busybox where no registry is reachable: Debian's busybox-static binary (the
# build context holds it; .ci/docker.sh unpacks it from the package). Never published.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["sh"]
