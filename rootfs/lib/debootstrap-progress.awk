# Turns debootstrap's "I: VERB ..." lines into one line per phase, as the phase begins,
# with the seconds since the start: what a long image build shows while it runs.
BEGIN { start = systime(); shown = 0 }
/^I: / {
    verb = $2
    if ((verb == "Retrieving" || verb == "Validating") && ($3 == "InRelease" || $3 == "Release" || $3 == "Packages")) step = 1
    else if (verb == "Checking" || verb == "Valid") step = 1
    else if (verb == "Retrieving" || verb == "Validating") step = 3
    else if (verb == "Extracting") step = 4
    else if (verb == "Installing" || verb == "Unpacking") step = 5
    else if (verb == "Configuring") step = 6
    else if (verb == "Base") step = 7
    else step = 2
    if (step > shown) {
        split("fetching the package lists,resolving dependencies,downloading packages,extracting the base,unpacking packages,configuring packages,base system installed", names, ",")
        printf "python image: %s (%d s)\n", names[step], systime() - start
        fflush()
        shown = step
    }
}
