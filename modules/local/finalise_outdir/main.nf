/*
 * The last step of a run: removes from --outdir the files of the pipeline's own folders that an earlier run
 * published and this run did not (a chunk no longer in the data, a group renamed), and any hidden temporary
 * name a killed publish left, so that nothing in --outdir looks current that this run did not compute. It
 * lists this run's files in pipeline_info/published_files.txt and the removed ones in
 * pipeline_info/removed_files.txt. `cache false`: it runs on every run.
 */
process FINALISE_OUTDIR {
    tag "${outdir}"
    label 'process_single'
    cache false

    input:
    path lists, stageAs: 'lists/?/published.txt'
    val outdir

    output:
    path 'removed.txt', emit: removed

    when:
    task.ext.when == null || task.ext.when

    script:
    finaliseScript(outdir)

    stub:
    finaliseScript(outdir)
}

def finaliseScript(outdir) {
    """
    outdir='${outdir}'
    cat lists/*/published.txt | sort -u > this_run.txt
    # the pipeline's own outputs; Nextflow's trace, timeline and report (timestamped names) are not touched
    managed='esm dnabert data_merge identified chunks pipeline_info/embed pipeline_info/embed_dna pipeline_info/merge pipeline_info/identify pipeline_info/split'
    {
        for folder in \$managed; do
            [ -d "\$outdir/\$folder" ] && (cd "\$outdir" && find "\$folder" -type f ! -name '.*.publishing')
        done
        for name in report.html pipeline_info/chunks.csv pipeline_info/preflight.json pipeline_info/plan.json \\
                    pipeline_info/validation.json pipeline_info/versions.yml; do
            [ -f "\$outdir/\$name" ] && printf '%s\\n' "\$name"
        done
        true
    } | sort -u > present.txt
    comm -23 present.txt this_run.txt > removed.txt
    while IFS= read -r stale; do
        rm -f "\$outdir/\$stale"
    done < removed.txt
    for folder in \$managed; do
        if [ -d "\$outdir/\$folder" ]; then
            find "\$outdir/\$folder" -name '.*.publishing' -type f -delete
            find "\$outdir/\$folder" -mindepth 1 -type d -empty -delete
        fi
    done
    find "\$outdir" -maxdepth 1 -name '.*.publishing' -type f -delete
    mkdir -p "\$outdir/pipeline_info"
    cp this_run.txt "\$outdir/pipeline_info/.published_files.txt.publishing"
    mv -fT "\$outdir/pipeline_info/.published_files.txt.publishing" "\$outdir/pipeline_info/published_files.txt"
    cp removed.txt "\$outdir/pipeline_info/.removed_files.txt.publishing"
    mv -fT "\$outdir/pipeline_info/.removed_files.txt.publishing" "\$outdir/pipeline_info/removed_files.txt"
    """
}
