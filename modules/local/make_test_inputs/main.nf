/*
 * The test profile's inputs, built on the spot (nf-core test profiles download theirs; nothing can be
 * downloaded here): a VirNucPro data/ folder of 2 viral and 2 host chunks of 20 proteins with their DNABERT-S
 * files, and a tiny random-weight ESM-2-architecture model (hidden 1280, one layer).
 */
process MAKE_TEST_INPUTS {
    tag 'test data'
    label 'process_single'

    output:
    path 'data'    , emit: data
    path 'tiny_esm', emit: esm_model

    when:
    task.ext.when == null || task.ext.when

    script:
    """
    virnucpro-extract make-demo-data data > /dev/null
    virnucpro-extract make-test-model tiny_esm > /dev/null
    """

    stub:
    """
    virnucpro-extract make-demo-data data > /dev/null
    mkdir -p tiny_esm && echo '{}' > tiny_esm/config.json
    """
}
